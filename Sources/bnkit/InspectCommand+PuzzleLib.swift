import BatchNormKit

extension InspectCommand {
    /// A PuzzleLib HDF5 file: each BatchNorm module with its per-channel table, then the
    /// other datasets.
    func inspectPuzzleLib(_ stateFile: StateFile) throws {
        let count = stateFile.moduleNames.count
        print(
            "\(file): PuzzleLib HDF5, \(count) BatchNorm module\(count == 1 ? "" : "s"), \(stateFile.entries.count) datasets"
        )
        for module in try stateFile.modules() {
            let family = module.rank.flatMap(BatchNormND.familyMember(forDataRank:)).map { " (\($0))" } ?? ""
            print(
                "\nBatchNorm module '\(module.name)': rank \(module.rank.map(String.init) ?? "?")\(family), \(module.state.maps) maps"
            )
            print(tableRow(["channel", "scale", "bias", "mean", "var"]))
            for c in 0..<module.state.maps {
                let state = module.state
                print(
                    tableRow(
                        ["\(c)"]
                            + [state.scale[c], state.bias[c], state.mean[c], state.var[c]].map { format(Double($0)) }))
            }
        }
        let others = stateFile.otherEntries()
        if !others.isEmpty {
            print("\nOther datasets:")
            let nameWidth = others.map(\.name.count).max() ?? 0, typeWidth = others.map(\.dataType.count).max() ?? 0
            for entry in others {
                print("  \(entry.name.padding(nameWidth))  \(entry.dataType.padding(typeWidth))  \(entry.shape)")
            }
        }
        print("\nnumOfProps is not saved in PuzzleLib files: it is 0 after a load.")
    }

    /// Cells padded to 13 characters, no trailing spaces.
    private func tableRow(_ cells: [String]) -> String {
        "  " + cells.dropLast().map { $0.padding(13) + " " }.joined() + (cells.last ?? "")
    }
}
