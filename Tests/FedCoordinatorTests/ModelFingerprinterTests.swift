import FedCore
import FedWire
import Foundation
import Testing

@testable import FedCoordinator

@Suite("Model fingerprint while the model is written")
struct ModelFingerprinterTests {
    @Test("Hashing behind a writer gives the digest (when asked) and CRCs of the finished model", arguments: [1, 3], [true, false])
    func followsTheWriter(tensors: Int, sha256: Bool) throws {
        // Tensors of uneven sizes that straddle the fingerprinter's 1 MiB publishing steps.
        let specs = (0..<tensors).map { TensorSpec(name: "t\($0)", shape: [300_001 + 77_777 * $0]) }
        let layout = try ModelLayout(specs)
        var values = [Float](repeating: .nan, count: layout.parameterCount)
        let fingerprint = values.withUnsafeMutableBufferPointer { buffer in
            let fingerprinter = ModelFingerprinter(values: UnsafeBufferPointer(buffer), layout: layout, sha256: sha256)
            var start = 0
            while start < buffer.count {
                fingerprinter.advance(to: start)
                let end = min(start + 8192, buffer.count)
                for i in start..<end { buffer[i] = Float(i % 1013) * 0.125 - 3 }
                start = end
            }
            return fingerprinter.finish()
        }
        let model = try ModelParameters(layout: layout, values: values)
        #expect(fingerprint.digest == (sha256 ? CheckpointStore.modelDigest(model) : nil))
        #expect(fingerprint.tensorCRCs == GlobalModel.tensorCRCs(model))
    }
}
