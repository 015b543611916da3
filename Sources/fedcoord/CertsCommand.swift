import ArgumentParser
import FedWire
import Foundation

/// `fedcoord certs …`: the federation's certificates.
struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Create and manage the federation's certificates.",
        subcommands: [DevCommand.self]
    )

    /// `fedcoord certs dev --out DIR`
    struct DevCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dev",
            abstract: "Create a development federation: a CA, a coordinator certificate and agent certificates.",
            discussion: """
                Writes ca.crt/ca.key, coordinator.crt/.key (valid for localhost, 127.0.0.1 and ::1), one \
                certificate and key per agent (hospital-a … hospital-e by default) and an empty crl.pem. \
                Private keys are written with mode 0600. For demos and trials on one machine, not for production.
                """
        )

        @Option(name: .long, help: "Folder to write the files into (created if missing).")
        var out = "certs/dev"

        @Option(name: .customLong("agent"), help: "An agent name (repeatable); default hospital-a … hospital-e.")
        var agents: [String] = []

        @Flag(name: .long, help: "Replace an existing federation in the folder (its old certificates stop working).")
        var force = false

        func validate() throws {
            for agent in agents where agent.isEmpty || agent.contains("/") || agent.hasPrefix(".") {
                throw ValidationError("'\(agent)' cannot be an agent name: use letters, digits and dashes, like hospital-a.")
            }
        }

        func run() throws {
            let names = agents.isEmpty ? DevelopmentFederation.defaultAgents : agents
            let existing = DevelopmentFederation.Files(directory: out).caCertificate
            if !force, (try? Certificate(pemFile: existing)) != nil {
                print("A federation already exists in \(out) (ca.crt); keeping it. Use --force to replace it.")
                return
            }
            let files = try DevelopmentFederation.create(in: out, agents: names)
            print("Development federation written to \(files.directory):")
            print("  ca.crt, ca.key             the federation CA (the only trust anchor of both sides)")
            print("  coordinator.crt, .key      the coordinator (localhost, 127.0.0.1, ::1)")
            for name in names { print("  \(name).crt, .key".padding(toLength: 29, withPad: " ", startingAt: 0) + "an agent") }
            print("  crl.pem                    the revocation list (empty)")
        }
    }
}
