/// The hash that names a model on the wire and in the round log: SHA-256 over the concatenated
/// SHA-256 digests of its tensors, in order. Each tensor's digest is the one its tensor stream
/// carries in its trailer, so a receiver verifies the whole model without hashing it twice, and
/// a sender hashes a model once however many agents it streams it to.
public enum ModelDigest {
    /// The digest of each tensor, given the flat values and each tensor's element range.
    public static func tensorDigests(_ values: UnsafeBufferPointer<Float>, ranges: [Range<Int>]) -> [[UInt8]] {
        ranges.map { SHA256Hasher.hash(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[$0]))) }
    }

    /// The model's digest from its tensors' digests.
    public static func combine(_ tensorDigests: [[UInt8]]) -> [UInt8] {
        let hasher = SHA256Hasher()
        for digest in tensorDigests { hasher.update(digest) }
        return hasher.finalize()
    }
}
