"""Joins `bnkit bench --json` and torch_bn3d.py results into a side-by-side table.

Several result files per side (rounds) are combined by taking each row's median. The
speed-up is PyTorch time / bnkit time; PyTorch runs NCDHW only, so both bnkit layouts are
compared with PyTorch's NCDHW time. Only rows of --dtype are compared. Effective GB/s use
3/2/5 elements of traffic per element (12/8/20 bytes in float32, 6/4/10 in the half types).
%roof is bnkit's same-run roofline (its `roofline_us`, median over rounds) over its time."""
import argparse, json, math, statistics

OPS = [("train", "fwd_train_us"), ("eval", "fwd_eval_us"), ("backward", "bwd_us")]
ELEMENTS = {"train": 3, "eval": 2, "backward": 5}
ELEMENT_SIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


def load(paths):
    return [json.load(open(p)) for p in paths]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bnkit", nargs="+", required=True)
    parser.add_argument("--torch", nargs="+", required=True)
    parser.add_argument("--dtype", default="float32", choices=sorted(ELEMENT_SIZE))
    args = parser.parse_args()
    size = ELEMENT_SIZE[args.dtype]
    ours, theirs = load(args.bnkit), load(args.torch)

    times, roofs = {}, {}
    for result in ours:
        for row in result["rows"]:
            if row.get("dtype", "float32") != args.dtype:
                continue
            times.setdefault((tuple(row["shape"]), row["layout"], row["op"]), []).append(row["median_us"])
            if "roofline_us" in row:
                roofs.setdefault((tuple(row["shape"]), row["layout"], row["op"]), []).append(row["roofline_us"])
    torch_times = {}
    for result in theirs:
        for row in result["rows"]:
            for op, key in OPS:
                torch_times.setdefault((tuple(row["shape"]), op), []).append(row[key])
    copy = statistics.median(r["copy_GBps"] for r in ours)
    torch_copy = statistics.median(r["copy_GBps"] for r in theirs)

    print(f"dtype {args.dtype}; bnkit: {ours[0]['device']}, {ours[0]['threads']} threads, copy {copy:.1f} GB/s "
          f"(2*bytes/time, same run); rounds: {len(ours)}")
    print(f"torch {theirs[0].get('torch', '?')}: {theirs[0]['threads']} threads, copy {torch_copy:.1f} GB/s "
          f"(torch's own measure: copy_ from a never-written tensor)")
    print()
    header = (f"{'shape':<16} {'op':<9} {'torch us':>10} {'ncdhw us':>10} {'GB/s':>7} {'%copy':>6} {'%roof':>6}"
              f" {'speedup':>8} {'ndhwc us':>10} {'GB/s':>7} {'%copy':>6} {'%roof':>6} {'speedup':>8} {'ndhwc/ncdhw':>11}")
    print(header)
    print("-" * len(header))
    speedups = {"ncdhw": [], "ndhwc": []}
    shapes = []
    for result in ours:
        for row in result["rows"]:
            if tuple(row["shape"]) not in shapes:
                shapes.append(tuple(row["shape"]))
    for shape in shapes:
        n = math.prod(shape)
        for op, _ in OPS:
            if (shape, op) not in torch_times:
                continue
            t = statistics.median(torch_times[(shape, op)])
            line = f"{'x'.join(map(str, shape)):<16} {op:<9} {t:>10.1f}"
            ours_by_layout = {}
            for layout in ("ncdhw", "ndhwc"):
                if (shape, layout, op) not in times:
                    line += f" {'-':>10} {'-':>7} {'-':>6} {'-':>6} {'-':>8}"
                    continue
                u = statistics.median(times[(shape, layout, op)])
                ours_by_layout[layout] = u
                gbps = ELEMENTS[op] * size * n / u / 1e3
                speedups[layout].append(t / u)
                roof = roofs.get((shape, layout, op))
                roof_text = f"{100 * statistics.median(roof) / u:>5.0f}%" if roof else f"{'-':>6}"
                line += f" {u:>10.1f} {gbps:>7.1f} {100 * gbps / copy:>5.0f}% {roof_text} {t / u:>7.2f}x"
            if len(ours_by_layout) == 2:
                line += f" {ours_by_layout['ndhwc'] / ours_by_layout['ncdhw']:>11.2f}"
            print(line)
    print()
    for layout, values in speedups.items():
        if values:
            geomean = math.exp(sum(math.log(v) for v in values) / len(values))
            print(f"geometric mean speed-up over PyTorch ({layout}, {len(values)} rows): {geomean:.2f}x"
                  f"  (min {min(values):.2f}x)")


if __name__ == "__main__":
    main()
