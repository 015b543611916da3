import ArgumentParser
import FedProtocol
import FedWire

/// `fedcoord`: the coordinator's command line.
@main
struct FedCoordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fedcoord",
        abstract: "FedCoord coordinator: federated training across hospitals over mutually authenticated TLS 1.3.",
        version: fedcoordSoftwareVersion,
        subcommands: [ServeCommand.self, RoundsCommand.self, StateCommand.self, CertsCommand.self]
    )

    static func main() {
        WireProcess.ignoreBrokenPipeSignal()
        WireProcess.lineBufferStandardOutput()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
