import ArgumentParser
import FedCoordinator
import FedWire
import Foundation

/// `fedbench`: performance figures for `make bench` (never pass/fail; tests do not time things).
@main
struct FedBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fedbench",
        abstract: "FedCoord benchmarks, with the machine's own limits measured in the same run.",
        subcommands: [WireBenchCommand.self, RoundsBenchCommand.self, TrainBenchCommand.self, SecAggBenchCommand.self]
    )

    static func main() {
        WireProcess.ignoreBrokenPipeSignal()
        WireProcess.lineBufferStandardOutput()
        WireProcess.tuneAllocatorForLargeBuffers()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// `fedbench wire`
struct WireBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wire",
        abstract: "Transport figures: TLS vs TCP vs AES-GCM, handshakes, chunk codec vs memcpy, tensor streams."
    )

    @Option(help: "Bytes per throughput run (default 1 GiB).")
    var bytes: Int = 1 << 30

    @Option(help: "Runs per throughput figure; the median is reported.")
    var runs: Int = 3

    @Option(help: "Run one measurement only (tls, tcp, stream, handshake, codec), for profiling.")
    var only: String?

    func run() throws {
        let bench = try WireBenchmark(bytes: bytes, runs: runs)
        defer { bench.cleanUp() }
        switch only {
        case nil: try bench.runAll()
        case "tls": print(String(format: "TLS %.2f GB/s", try bench.tlsThroughput()))
        case "tcp": print(String(format: "TCP %.2f GB/s", try bench.tcpThroughput()))
        case "stream": print(String(format: "tensor stream %.2f GB/s", try bench.tensorStreamThroughput()))
        case "handshake": print(String(format: "handshakes %.0f /s", try bench.handshakeRate(seconds: 3)))
        case "codec": print(bench.chunkCodec())
        case let other?: throw ValidationError("--only takes tls, tcp, stream, handshake or codec, not '\(other)'")
        }
    }
}

/// `fedbench rounds`
struct RoundsBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rounds",
        abstract: "Round time, bytes, wire limit and coordinator peak RSS over a P × N grid of real processes."
    )

    @Option(help: "Parameter counts, comma-separated.") var parameters = "1000000,10000000,50000000"
    @Option(help: "Agent counts, comma-separated.") var agents = "2,8,32"
    @Option(help: "Measured rounds per point (after a warm-up round).") var rounds = 5
    @Option(help: "Skip points whose agents would need more than this many GB together.") var maxAgentGB = 20.0
    @Option(help: "How the coordinator combines updates: mean, median, trimmed_mean or krum.") var strategy = "mean"

    func run() throws {
        let bench = try WireBenchmark(bytes: 1 << 30, runs: 3)
        defer { bench.cleanUp() }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        guard let strategy = AggregationStrategy(rawValue: strategy) else {
            throw ValidationError("--strategy must be one of \(AggregationStrategy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let rounds = RoundBenchmark(binDirectory: bin, rounds: self.rounds)
        var results: [RoundBenchmark.Result] = []
        for p in parameters.split(separator: ",").compactMap({ Int($0) }) {
            for n in agents.split(separator: ",").compactMap({ Int($0) }) {
                // Each agent holds the global model, its update and transfer buffers: about 3 × 4 bytes per parameter.
                if Double(n) * Double(p) * 12 / 1e9 > maxAgentGB {
                    print("skip P=\(p) N=\(n): the agents alone would need \(Int(Double(n) * Double(p) * 12 / 1e9)) GB")
                    continue
                }
                // The wire limit's throughput is measured next to the point it divides, three times
                // just before and three times just after (this shared machine's speed drifts within
                // minutes): the median of the six.
                let before = try (0..<3).map { _ in try bench.tlsThroughput() }
                var result = rounds.run(.init(parameters: p, agents: n, strategy: strategy))
                let after = try (0..<3).map { _ in try bench.tlsThroughput() }
                let tls = (before + after).sorted()
                result.tlsGBps = (tls[2] + tls[3]) / 2
                print(String(format: "  P=%d N=%d \(strategy.rawValue): %.2f s/round, peak RSS %.0f MB%@", p, n, result.medianRoundSeconds,
                             Double(result.peakRSS) / 1048576, (result.error.map { " (\($0))" } ?? "") as NSString))
                results.append(result)
            }
        }
        print("")
        rounds.printTable(results)
    }
}

/// `fedbench train`
struct TrainBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Local training throughput (MLP 30 → 64 → 64 → 1) beside scikit-learn's MLPClassifier on the same data."
    )

    @Option(help: "Rows of synthetic training data.")
    var rows: Int = 100_000

    @Option(help: "Epochs timed per side; the median is reported.")
    var runs: Int = 3

    func run() throws {
        try TrainingBenchmark(rows: rows, runs: runs).run()
    }
}

/// `fedbench secagg`
struct SecAggBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secagg",
        abstract: "Secure aggregation: round time against plaintext (one agent dropped after masking), recovery time, mask generation vs openssl."
    )

    @Option(help: "Parameters of the model.") var parameters = 10_000_000
    @Option(help: "Agents.") var agents = 8
    @Option(help: "Measured rounds per configuration (after a warm-up round).") var rounds = 5
    @Flag(help: "Only the mask generation figure.") var maskOnly = false

    func run() throws {
        if maskOnly {
            print(String(format: "mask %.2f GB/s, openssl aes-128-ctr %.2f GB/s, quantize 10M %.3f s", try SecAggBenchmark.maskThroughput(),
                         WireBenchmark.openSSLSpeedOnce("aes-128-ctr"), try SecAggBenchmark.quantizeSeconds(count: 10_000_000)))
            return
        }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        try SecAggBenchmark(binDirectory: bin, parameters: parameters, agents: agents, rounds: rounds).run()
    }
}
