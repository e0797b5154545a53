#!/usr/bin/env python3
"""Checks `bnkit calibrate --mpi` against single-process `bnkit calibrate`.

Writes seeded float32 .npy batches (uneven N, standard library only), runs
`mpirun -np P bnkit calibrate --mpi FILES -o OUT`, builds the per-step concatenations
along N (step k: files k*P ... k*P + P - 1, in rank order), runs single-process
`bnkit calibrate` on them, and compares the two states element by element (relative
error <= 1e-6, floor 1e-6). Exit 0 when they agree, 1 otherwise.

Usage: scripts/mpi_calibrate_check.py BNKIT RANKS [MPIRUN_ARGS...]
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

MAPS, SPATIAL = 3, (2, 3, 4)
BATCHES = [2, 1, 3, 2, 1]  # five files: with 2 ranks the last step has an empty rank


def write_npy(path, shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join(f"{d}, " for d in shape)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(values)}f", *values))


def read_state(path):
    with open(path, "rb") as f:
        data = f.read()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + length + start:8 + length + end]
        code = {"F32": "f", "I64": "q"}[info["dtype"]]
        out[key] = struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw)
    return out


def main():
    bnkit, ranks, mpirun_args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    rng = random.Random(7)
    work = tempfile.mkdtemp(prefix="bnkit-mpi-calibrate-")
    row = MAPS * SPATIAL[0] * SPATIAL[1] * SPATIAL[2]
    files, contents = [], []
    for i, n in enumerate(BATCHES):
        values = [100 + c + rng.gauss(0, 1 + c) for _ in range(n) for c in range(MAPS) for _ in range(row // MAPS)]
        path = os.path.join(work, f"batch{i}.npy")
        write_npy(path, (n, MAPS) + SPATIAL, values)
        files.append(path)
        contents.append(values)
    concatenated = []
    for step in range((len(files) + ranks - 1) // ranks):
        members = range(step * ranks, min((step + 1) * ranks, len(files)))
        values = [v for i in members for v in contents[i]]
        path = os.path.join(work, f"step{step}.npy")
        write_npy(path, (len(values) // row, MAPS) + SPATIAL, values)
        concatenated.append(path)
    synchronized, single = os.path.join(work, "mpi.safetensors"), os.path.join(work, "single.safetensors")
    subprocess.run(["mpirun", "-np", str(ranks), *mpirun_args, bnkit, "calibrate", "--mpi", "--maps", str(MAPS),
                    *files, "-o", synchronized], check=True)
    subprocess.run([bnkit, "calibrate", "--maps", str(MAPS), *concatenated, "-o", single], check=True)
    a, b = read_state(synchronized), read_state(single)
    worst = 0.0
    for key in sorted(b):
        if key not in a or len(a[key]) != len(b[key]):
            print(f"FAIL  {key}: missing or wrong length in the --mpi state")
            return 1
        for x, y in zip(a[key], b[key]):
            worst = max(worst, abs(x - y) / (abs(y) + 1e-6))
    identical = all(a[k] == b[k] for k in b)
    ok = worst <= 1e-6
    print(f"{'PASS' if ok else 'FAIL'}  calibrate --mpi on {ranks} ranks, {len(files)} files == calibrate on "
          f"{len(concatenated)} concatenations: max relative error {worst:.3g}{' (bitwise identical)' if identical else ''}")
    shutil.rmtree(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
