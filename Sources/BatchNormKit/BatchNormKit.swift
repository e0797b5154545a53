// BatchNormKit: the one module a user imports. It re-exports the core (tensors, the
// BatchNorm family, backends, process groups) and the file formats (safetensors, .npy,
// PuzzleLib HDF5), as swift-collections' `Collections` re-exports its modules. Import
// `BatchNormCore` or `BatchNormFormats` alone to depend on less.
@_exported import BatchNormCore
@_exported import BatchNormFormats
