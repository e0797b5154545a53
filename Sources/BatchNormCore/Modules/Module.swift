/// PuzzleLib's module lifecycle: a named, stateful layer with a training and an
/// evaluation mode, a forward pass by calling it and an explicit backward pass.
///
/// After `module(x)` the module keeps `inData` (the input) and `data` (the output);
/// after ``backward(_:updParamGrads:updGrad:scale:momentum:)`` it keeps `grad` (the input
/// gradient). ``trainMode()``, ``evalMode()`` and ``reset()`` drop them.
public protocol Module: AnyObject {
    /// An optional name, used in error messages and as the key prefix of saved state.
    var name: String? { get }
    /// `true` in training mode (the initial mode, as in PuzzleLib), `false` in evaluation mode.
    var isTraining: Bool { get }
    /// The input of the last forward pass, or `nil`.
    var inData: Tensor? { get }
    /// The output of the last forward pass, or `nil`.
    var data: Tensor? { get }
    /// The input gradient computed by the last backward pass, or `nil`.
    var grad: Tensor? { get }

    /// Switches to training mode and drops saved tensors.
    func trainMode()
    /// Switches to evaluation mode and drops saved tensors.
    func evalMode()
    /// Forward pass. - Throws: when the input does not fit the module.
    func callAsFunction(_ data: Tensor) throws -> Tensor
    /// Backward pass for the gradient of the last forward output.
    ///
    /// - Parameters:
    ///   - grad: Gradient with respect to ``data``, same shape.
    ///   - updParamGrads: Accumulate parameter gradients (training mode only).
    ///   - updGrad: Compute and store the input gradient ``grad``.
    ///   - scale: Weight of the new parameter gradient.
    ///   - momentum: Weight of the accumulated parameter gradient.
    /// - Returns: The input gradient, or `nil` when `updGrad` is `false`.
    /// - Throws: when `grad` does not fit or no forward pass was made.
    @discardableResult
    func backward(_ grad: Tensor, updParamGrads: Bool, updGrad: Bool, scale: Float, momentum: Float) throws -> Tensor?
    /// Sets every parameter gradient to zero. - Throws: for an empty module.
    func zeroGradParams() throws
    /// `param += learnRate · grad` for every parameter. - Throws: for an empty module.
    func updateParams(learnRate: Float) throws
    /// Number of parameter values (PuzzleLib's `numOfParams()`).
    var numOfParams: Int { get }
    /// Bytes of parameter values (PuzzleLib's `paramSize()`).
    var paramSize: Int { get }
    /// Drops the saved input, output and gradient.
    func reset()
}
