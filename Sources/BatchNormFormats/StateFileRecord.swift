import BatchNormCore

/// One module's entries as a format's reader found them, before the checks that every
/// format shares (``state(maps:rank:affine:)``): the one place where a stored state is
/// judged.
struct StateFileRecord {
    /// One per-channel entry: its key in the file, its values (`nil`: absent), and the `C`
    /// of its shape.
    struct Field {
        var key: String
        var values: [Float]?
        var maps: Int
    }

    var scale: Field
    var bias: Field
    var mean: Field
    var variance: Field
    var numOfProps: Int
    /// PuzzleLib's parameter rank, or `nil` where the format has none.
    var rank: Int?
    /// Whether the module was saved as affine: safetensors has `weight` or `bias`; a
    /// PuzzleLib file has no `affine` = 0 mark.
    var affine: Bool

    /// The state, checked: `C` agrees between the entries and with `maps`, the rank with
    /// `rank`, scale and bias are present unless the module is not affine, and the values
    /// follow ``BatchNormState/firstInvalidValue(affine:)``.
    /// - Throws: ``StateFileError`` naming the key (the caller adds the file).
    func state(maps: Int?, rank: Int?, affine: Bool) throws -> BatchNormState {
        if let rank, let stored = self.rank, rank != stored {
            throw StateFileError(.rankMismatch(key: mean.key, expected: rank, actual: stored))
        }
        let expectedMaps = maps ?? mean.maps
        for field in [mean, variance, scale, bias] where field.values != nil && field.maps != expectedMaps {
            throw StateFileError(.mapsMismatch(key: field.key, expected: expectedMaps, actual: field.maps))
        }
        for field in [scale, bias] where field.values == nil && affine {
            throw StateFileError(.missingKey(key: field.key, available: [mean.key, variance.key]))
        }
        guard let meanValues = mean.values, let varianceValues = variance.values else {
            throw StateFileError(.missingKey(key: mean.values == nil ? mean.key : variance.key, available: []))
        }
        let state = BatchNormState(
            scale: scale.values ?? Array(repeating: 1, count: expectedMaps),
            bias: bias.values ?? Array(repeating: 0, count: expectedMaps),
            mean: meanValues, var: varianceValues, numOfProps: numOfProps)
        if let invalid = state.firstInvalidValue(affine: affine) {
            let field = [BatchNormState.Field.scale: scale, .bias: bias, .mean: mean, .variance: variance][
                invalid.field]!
            let value = invalid.value
            switch invalid.problem {
            case .nonFinite: throw StateFileError(.nonFiniteValue(key: field.key, index: invalid.index, value: value))
            case .negativeVariance:
                throw StateFileError(.negativeVariance(key: field.key, index: invalid.index, value: value))
            case .notIdentity(let expected):
                throw StateFileError(
                    .nonAffineParameter(key: field.key, index: invalid.index, expected: expected, actual: value))
            }
        }
        return state
    }
}
