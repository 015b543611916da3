import Foundation
import Testing

/// The fuzzers' committed seeds (and any crash saved there) replayed through the plain build's
/// targets, so that an input that once broke a reader keeps being tried.
@Suite("Fuzz corpus replay")
struct FuzzCorpusTests {
    @Test("Every seed of every fuzz target is taken or refused without a crash",
          arguments: ["frame", "envelope", "tensor", "safetensors", "csv", "config", "roundlog"])
    func replay(target: String) throws {
        let fedfuzz = try executable("fedfuzz")
        let corpus = HostileClientEndToEndTests.repository + "/Tests/Fuzz/corpus/" + target
        let seeds = try FileManager.default.contentsOfDirectory(atPath: corpus)
        #expect(!seeds.isEmpty)
        let (status, errors) = try runProcess(fedfuzz, [target, corpus])
        #expect(status == 0, "\(errors)")
    }
}
