// Shape legend: N batch, C channels, S spatial size; per channel c the coefficients
// a[c] (gradient multiplier), b[c] (input multiplier), shift[c], offset[c].

extension CPUBackend {
    /// Apply (forward): `y[n,c,s] = b[c]·(x[n,c,s] − shift[c]) + offset[c]`.
    public func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws {
        applyChannelwise(gradient: nil, input: input, output: output, coefficients: coefficients)
    }

    /// Apply (backward): `dx[n,c,s] = a[c]·g[n,c,s] + b[c]·(x[n,c,s] − shift[c]) + offset[c]`;
    /// `x` is not read when every `b[c]` is 0.
    public func applyGradient(_ gradient: Tensor, input: Tensor, into output: Tensor,
                              coefficients: ChannelCoefficients) throws {
        applyChannelwise(gradient: gradient, input: coefficients.ignoresInput ? nil : input,
                         output: output, coefficients: coefficients)
    }

    /// `out = a·g + b·(x − shift) + offset` over every element; a missing `g` or `x`
    /// contributes nothing. All tensors share shape and layout; `out` may alias `x` or `g`.
    private func applyChannelwise(gradient: Tensor?, input: Tensor?, output: Tensor,
                                  coefficients: ChannelCoefficients) {
        let geometry = ChannelGeometry(shape: output.shape)
        let (channels, spatial) = (geometry.channels, geometry.spatial)
        guard geometry.elementCount > 0 else { return }
        let g = gradient.map { SharedPointer($0.storage.floats) }
        let x = input.map { SharedPointer($0.storage.floats) }
        let y = SharedPointer(output.storage.floats)
        let a = gradient == nil ? [Float](repeating: 0, count: channels) : coefficients.gradientMultiplier
        let (b, shift, offset) = (coefficients.inputMultiplier, coefficients.shift, coefficients.offset)

        @Sendable @inline(__always) func value(_ index: Int, _ c: Int) -> Float {
            var result = offset[c]
            if let g { result += a[c] * g.base[index] }
            if let x { result += b[c] * (x.base[index] - shift[c]) }
            return result
        }

        switch output.layout {
        case .channelsFirst:
            parallelFor(geometry.batch * channels, elements: geometry.elementCount) { planes in
                for plane in planes {
                    let c = plane % channels
                    for index in (plane * spatial)..<((plane + 1) * spatial) { y.base[index] = value(index, c) }
                }
            }
        case .channelsLast:
            parallelFor(geometry.batch * spatial, elements: geometry.elementCount) { rows in
                for row in rows {
                    for c in 0..<channels {
                        let index = row * channels + c
                        y.base[index] = value(index, c)
                    }
                }
            }
        }
    }
}
