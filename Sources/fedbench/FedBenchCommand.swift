import ArgumentParser
import FedWire
import Foundation

/// `fedbench`: performance figures for `make bench` (never pass/fail; tests do not time things).
@main
struct FedBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fedbench",
        abstract: "FedCoord benchmarks, with the machine's own limits measured in the same run.",
        subcommands: [WireBenchCommand.self]
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
