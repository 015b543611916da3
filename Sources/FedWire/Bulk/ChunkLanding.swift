import Foundation

/// Memory a call's tensor chunks are read into straight from TLS, instead of into a frame buffer
/// that the consumer then copies from: a model an agent receives is written once, not twice.
///
/// A consumer registers one for the tensor it is receiving (``WireConnection/land(callID:into:)``)
/// and ends it before it lets go of the memory (``WireConnection/endLanding(_:)``, which waits for
/// a chunk being read into it). The connection's reader lands a chunk frame of that call whose
/// bytes fit the destination at their offset; it still routes the chunk to the call, whose
/// consumer checks its order, size and CRC as for any chunk, so a chunk landed where it should
/// not have been is never accepted. Every other frame takes the usual path.
public final class ChunkLanding: @unchecked Sendable {
    // @unchecked: `isOpen` is guarded by `lock`, which the reader holds while it writes into
    // `destination`; `destination` itself is owned by the consumer until ``WireConnection/endLanding(_:)``.
    let callID: UInt64
    /// Which of the call's tensor streams (counted by their headers, from 1) the destination is
    /// for: the reader lands a chunk only while that stream's header is the last it has routed,
    /// so a later tensor's chunks never land in an earlier tensor's memory.
    let tensorIndex: Int
    let destination: UnsafeMutableRawBufferPointer
    let lock = NSLock()
    var isOpen = true

    init(callID: UInt64, tensorIndex: Int, destination: UnsafeMutableRawBufferPointer) {
        self.callID = callID
        self.tensorIndex = tensorIndex
        self.destination = destination
    }

    /// Whether `bytes` at `offset` lie inside the destination.
    func fits(offset: UInt64, count: Int) -> Bool {
        count > 0 && offset <= UInt64(destination.count) && UInt64(count) <= UInt64(destination.count) - offset
    }
}
