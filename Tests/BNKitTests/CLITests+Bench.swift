import BatchNormTestSupport
import Foundation
import Testing

@testable import BatchNormKit

extension CLITests {
    /// A small tensor that still runs on several threads (32768 elements).
    static let benchArguments = ["bench", "--shape", "2,4,16,16,16", "--layout", "ncdhw", "--runs", "5"]

    /// `bench --json` rows carry the same-run roofline: a positive finite `roofline_us` and
    /// the read and read-write bandwidths it comes from, for every op.
    @Test func benchJSONRowsCarryTheRoofline() throws {
        let run = try Self.bnkit(Self.benchArguments + ["--json"])
        Self.succeeds(run)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(run.standardOutput.utf8)) as? [String: Any])
        let rows = try #require(object["rows"] as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["op"] as? String }) == ["train", "eval", "backward"])
        #expect(object["kernel_level"] as? String == "\(KernelLevel.selected)")
        for row in rows {
            for key in ["roofline_us", "read_GBps", "read_write_GBps", "median_us"] {
                let value = try #require(row[key] as? Double, "\(key) missing in \(row)")
                #expect(value.isFinite && value > 0, "\(key) = \(value)")
            }
        }
    }

    /// The human table has the roofline columns beside `of copy`, a value in each row, and
    /// the per-shape bandwidth line.
    @Test func benchTableHasRooflineColumns() throws {
        let run = try Self.bnkit(Self.benchArguments)
        Self.succeeds(run)
        let lines = run.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.first?.contains(", kernel level \(KernelLevel.selected);") == true, "\(run.standardOutput)")
        let header = try #require(lines.first { $0.hasPrefix("op ") })
        #expect(header.hasSuffix("of copy  roofline µs  of roofline"), "\(header)")
        let rows = lines.filter { ["train ", "eval ", "backward "].contains(where: $0.hasPrefix) }
        #expect(rows.count == 3, "\(run.standardOutput)")
        for row in rows {
            // ... of copy, roofline µs, of roofline: "<n> %  <µs>  <n> %".
            let fields = row.split(separator: " ")
            let roofline = try #require(Double(fields[fields.count - 3]), "\(row)")
            #expect(roofline > 0 && roofline.isFinite && fields.last == "%", "\(row)")
        }
        #expect(
            lines.contains { $0.hasPrefix("  2x4x16x16x16 ncdhw float32") && $0.contains("read+write") },
            "\(run.standardOutput)")
    }
}
