import FedCore
import FedHashing
import FedWire

/// Each tensor's CRC-32C over one contiguous share of a model, taken block by block as the
/// share's owner finishes the blocks, in order; ``combined(_:)`` joins the shares' CRCs into each
/// tensor's CRC (``CRC32C/append(crc:length:)``). One instance per thread.
final class PartChecksums: @unchecked Sendable {
    // @unchecked: each instance is written by one thread, then read after that thread is joined.
    private let ranges: [Range<Int>]
    private var crcs: [CRC32C]
    private var lengths: [Int]
    /// The tensor the last block ended in (blocks come in order).
    private var tensor = 0
    /// Whether every value added so far is finite (checked in the CRC's pass).
    private(set) var allFinite = true

    init(layout: ModelLayout) {
        ranges = layout.ranges
        crcs = Array(repeating: CRC32C(), count: ranges.count)
        lengths = Array(repeating: 0, count: ranges.count)
    }

    /// Adds the elements of `model` in `block`, which follows this share's previous block.
    func add(_ model: UnsafeBufferPointer<Float>, _ block: Range<Int>) {
        var start = block.lowerBound
        while start < block.upperBound {
            while !ranges[tensor].contains(start) { tensor += 1 }
            let end = min(block.upperBound, ranges[tensor].upperBound)
            if crcs[tensor].update(floats: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: model[start..<end]))) != nil {
                allFinite = false
            }
            lengths[tensor] += (end - start) * 4
            start = end
        }
    }

    /// Each tensor's CRC-32C over the whole model, from the shares in model order.
    static func combined(_ parts: [PartChecksums]) -> [UInt32] {
        guard let first = parts.first else { return [] }
        return first.ranges.indices.map { index in
            var crc = CRC32C()
            for part in parts where part.lengths[index] > 0 { crc.append(crc: part.crcs[index].value, length: part.lengths[index]) }
            return crc.value
        }
    }
}
