import FedSecAgg
import Foundation

/// Secure aggregation's cost, measured in one run: the round time with FLSECAGG-v1 (one agent
/// dropping out after the others have masked with it, every round) against the plaintext round
/// time with the same processes; the coordinator's time to recover a dropped agent's masks; and
/// agent-side mask generation against `openssl speed -evp aes-128-ctr` on one core.
struct SecAggBenchmark {
    let binDirectory: String
    let parameters: Int
    let agents: Int
    let rounds: Int

    /// Agent-side masking as a round does it: the self mask and `masks − 1` pairwise masks folded
    /// into a vector of `elements` in one pass; GB/s of mask generated (4 bytes per element per mask).
    static func maskThroughput(elements: Int = 10_000_002, masks: Int = 8, runs: Int = 15) throws -> Double {
        var vector = [UInt32](repeating: 0, count: elements)
        var rates: [Double] = []
        for run in 0..<runs {
            let generators = try (0..<masks).map { (generator: try MaskGenerator(seed: SecAggCrypto.sha256([UInt8(run), UInt8($0)])), subtract: $0 % 2 == 1) }
            let started = DispatchTime.now().uptimeNanoseconds
            vector.withUnsafeMutableBufferPointer { MaskGenerator.apply(generators, to: $0.baseAddress!, count: $0.count) }
            rates.append(Double(elements * 4 * masks) / Double(DispatchTime.now().uptimeNanoseconds - started))
        }
        return rates.sorted()[runs / 2]
    }

    /// One mask stream generated into a cache-resident 16 KiB buffer (what `openssl speed`
    /// measures for the cipher), GB/s of mask.
    static func keystreamThroughput(bytes: Int = 1 << 30) throws -> Double {
        let generator = try MaskGenerator(seed: SecAggCrypto.sha256([42]))
        var buffer = [UInt32](repeating: 0, count: 4096)
        let started = DispatchTime.now().uptimeNanoseconds
        buffer.withUnsafeMutableBufferPointer { b in
            for _ in 0..<(bytes / (4096 * 4)) { generator.apply(to: b.baseAddress!, count: 4096) }
        }
        return Double(bytes) / Double(DispatchTime.now().uptimeNanoseconds - started)
    }

    /// Seconds to quantize a `count`-parameter update (clip, weight, stochastic rounding).
    static func quantizeSeconds(count: Int) throws -> Double {
        let delta = (0..<count).map { Float($0 % 97) * 1e-4 }
        var x = [UInt32](repeating: 0, count: count + 2)
        let quantizer = Quantizer(scaleExponent: 24, clip: 2, maxWeight: 10_000)
        let started = DispatchTime.now().uptimeNanoseconds
        try delta.withUnsafeBufferPointer { d in
            try x.withUnsafeMutableBufferPointer { try quantizer.quantize(d, examples: 500, rounding: SecAggCrypto.sha256([1]), into: $0) }
        }
        return Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
    }

    func run() throws {
        print("== secure aggregation (FLSECAGG-v1), P = \(parameters), N = \(agents), median of \(rounds) rounds")
        // Interleaved, three times each, medians: the machine is shared and its speed drifts.
        var maskRates: [Double] = [], opensslRates: [Double] = [], streamRates: [Double] = []
        for _ in 0..<3 {
            opensslRates.append(WireBenchmark.openSSLSpeedOnce("aes-128-ctr"))
            streamRates.append(try Self.keystreamThroughput())
            maskRates.append(try Self.maskThroughput(elements: parameters + 2, masks: agents))
        }
        let mask = maskRates.sorted()[1], openssl = opensslRates.sorted()[1], stream = streamRates.sorted()[1]
        print(String(format: "one mask stream into a cache-resident buffer (as openssl speed measures), 1 core: %.2f GB/s = %.2f of openssl",
                     stream, stream / max(openssl, 1e-9)))
        print(String(format: "mask generation (self + %d pairwise AES-128-CTR masks folded into %d elements), 1 core: %.2f GB/s", agents - 1, parameters + 2, mask))
        print(String(format: "openssl speed -evp aes-128-ctr, 1 core, 16 KiB blocks:                 %.2f GB/s", openssl))
        print(String(format: "ratio: %.2f (target ≥ 0.8)", mask / max(openssl, 1e-9)))
        let bench = RoundBenchmark(binDirectory: binDirectory, rounds: rounds)
        let plain = bench.run(.init(parameters: parameters, agents: agents))
        let secure = bench.run(.init(parameters: parameters, agents: agents, secure: true))
        let dropped = bench.run(.init(parameters: parameters, agents: agents, secure: true, dropouts: 1))
        for (label, result) in [("plaintext", plain), ("secure, no dropout", secure), ("secure, 1 dropped after masking", dropped)] {
            if let error = result.error {
                print("\(label): failed: \(error)")
            } else {
                print(String(format: "%-34@ %6.2f s/round, coordinator peak RSS %.0f MB", label as NSString, result.medianRoundSeconds,
                             Double(result.peakRSS) / 1048576))
            }
        }
        if plain.error == nil, dropped.error == nil, secure.error == nil {
            print(String(format: "secure (1 dropped) / plaintext: %.2f (target ≤ 1.3); secure (no dropout) / plaintext: %.2f",
                         dropped.medianRoundSeconds / plain.medianRoundSeconds, secure.medianRoundSeconds / plain.medianRoundSeconds))
        }
        if let recovery = dropped.recoverySeconds {
            print(String(format: "coordinator recovery time per dropped agent (reconstruct its key, regenerate %d neighbours' pairwise masks over %d elements): %.2f s",
                         agents - 1, parameters + 2, recovery))
        }
    }
}
