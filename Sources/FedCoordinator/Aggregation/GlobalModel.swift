import FedCore
import FedHashing

/// The federation's current model and the server optimizer's state, with each tensor's CRC-32C
/// (computed once per model for all its broadcasts). The coordinator owns one, behind its
/// model lock; a ``RoundAggregator`` steps it at a round's close.
///
/// Memory: 4 bytes per parameter, plus the optimizer's moments if it has any.
struct GlobalModel {
    var parameters: ModelParameters
    var optimizer: ServerOptimizer
    private(set) var tensorCRCs: [UInt32]

    init(parameters: ModelParameters, optimizer: ServerOptimizer) {
        self.parameters = parameters
        self.optimizer = optimizer
        tensorCRCs = Self.tensorCRCs(parameters)
    }

    var layout: ModelLayout { parameters.layout }

    /// Applies the delta `meanDelta` writes block by block with the server optimizer, `parts`
    /// threads each stepping its share, each block's CRC-32C taken right after it is stepped,
    /// while it is in cache. No SHA-256: the commit writer takes it.
    mutating func step(
        parts: Int, _ meanDelta: (_ part: Int, _ range: Range<Int>, _ out: UnsafeMutableBufferPointer<Double>) -> Void
    ) -> ModelFingerprinter.Fingerprint {
        let layout = layout
        let checksums = (0..<parts).map { _ in PartChecksums(layout: layout) }
        parameters.values.withUnsafeMutableBufferPointer { values in
            let model = UnsafeBufferPointer(values)
            optimizer.step(model: values, parts: parts, meanDelta: meanDelta) { part, range in
                checksums[part].add(model, range)
            }
        }
        return ModelFingerprinter.Fingerprint(
            digest: nil, tensorCRCs: PartChecksums.combined(checksums), allFinite: checksums.allSatisfy(\.allFinite))
    }

    /// Applies the delta `meanDelta` writes block by block with the server optimizer on one
    /// thread, hashing the new model (CRCs and SHA-256) on a second as it is written: the SHA-256
    /// cannot be split, so the step is not either.
    mutating func stepHashing(
        _ meanDelta: (_ range: Range<Int>, _ out: UnsafeMutableBufferPointer<Double>) -> Void
    ) -> ModelFingerprinter.Fingerprint {
        let layout = layout
        return parameters.values.withUnsafeMutableBufferPointer { values in
            let fingerprinter = ModelFingerprinter(values: UnsafeBufferPointer(values), layout: layout, sha256: true)
            optimizer.step(model: values) { range, out in
                fingerprinter.advance(to: range.lowerBound)
                meanDelta(range, out)
            }
            return fingerprinter.finish()
        }
    }

    /// Records the CRCs of a step that is being committed (a step's own, taken as it wrote).
    mutating func adopt(_ fingerprint: ModelFingerprinter.Fingerprint) {
        tensorCRCs = fingerprint.tensorCRCs
    }

    /// Each tensor's CRC-32C, in layout order (one pass over the model, about 4 ms at 10M).
    static func tensorCRCs(_ model: ModelParameters) -> [UInt32] {
        model.values.withUnsafeBufferPointer { CRC32C.tensorChecksums($0, ranges: model.layout.ranges).crcs }
    }
}
