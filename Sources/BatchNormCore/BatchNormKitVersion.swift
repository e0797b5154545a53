/// The version of the BatchNormKit package, in one place: `bnkit --version` prints it and
/// the README's `.package(url:from:)` line names it (a test checks that they agree).
public enum BatchNormKitVersion {
    /// Semantic version, `"major.minor.patch"`.
    public static let current = "0.9.0"
}
