import FedCore
import FedWire
import Foundation

/// An agent's configuration file (`agent.json`). Every field is documented in the README;
/// unknown fields are refused; `--set a.b=value` overrides any field.
public struct AgentConfiguration: Codable, Sendable {
    public struct Coordinator: Codable, Sendable {
        /// The coordinator's host name or IP address; its certificate must name it.
        public var host: String
        public var port: UInt16
        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    public struct TLSFiles: Codable, Sendable {
        public var certificate: String
        public var privateKey: String
        public var ca: String
        enum CodingKeys: String, CodingKey {
            case certificate, ca
            case privateKey = "private_key"
        }
        public init(certificate: String, privateKey: String, ca: String) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.ca = ca
        }
    }

    public struct Trainer: Codable, Sendable {
        /// "benchmark" (a deterministic stand-in; see the README) until local training lands.
        public var kind = "benchmark"
        public var examples: UInt64 = 100
        public var step: Float = 0.001
        /// Seconds the benchmark trainer takes per task (to play a straggler).
        public var delaySeconds = 0.0
        /// Extra random delay per task, uniform in [0, delay_jitter_seconds).
        public var delayJitterSeconds = 0.0
        enum CodingKeys: String, CodingKey {
            case kind, examples, step
            case delaySeconds = "delay_seconds", delayJitterSeconds = "delay_jitter_seconds"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            kind = try c.decodeIfPresent(String.self, forKey: .kind) ?? "benchmark"
            examples = try c.decodeIfPresent(UInt64.self, forKey: .examples) ?? 100
            step = try c.decodeIfPresent(Float.self, forKey: .step) ?? 0.001
            delaySeconds = try c.decodeIfPresent(Double.self, forKey: .delaySeconds) ?? 0
            delayJitterSeconds = try c.decodeIfPresent(Double.self, forKey: .delayJitterSeconds) ?? 0
        }
    }

    public var coordinator: Coordinator
    public var tls: TLSFiles
    public var trainer = Trainer()
    public var heartbeatIntervalSeconds = 5.0
    /// First wait before reconnecting; doubles up to `reconnect_max_seconds`, with jitter.
    public var reconnectInitialSeconds = 0.5
    public var reconnectMaxSeconds = 30.0
    public var maxFrameBytes = 8 << 20

    enum CodingKeys: String, CodingKey {
        case coordinator, tls, trainer
        case heartbeatIntervalSeconds = "heartbeat_interval_seconds", reconnectInitialSeconds = "reconnect_initial_seconds"
        case reconnectMaxSeconds = "reconnect_max_seconds", maxFrameBytes = "max_frame_bytes"
    }

    public init(coordinator: Coordinator, tls: TLSFiles) {
        self.coordinator = coordinator
        self.tls = tls
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        coordinator = try c.decode(Coordinator.self, forKey: .coordinator)
        tls = try c.decode(TLSFiles.self, forKey: .tls)
        trainer = try c.decodeIfPresent(Trainer.self, forKey: .trainer) ?? Trainer()
        heartbeatIntervalSeconds = try c.decodeIfPresent(Double.self, forKey: .heartbeatIntervalSeconds) ?? 5
        reconnectInitialSeconds = try c.decodeIfPresent(Double.self, forKey: .reconnectInitialSeconds) ?? 0.5
        reconnectMaxSeconds = try c.decodeIfPresent(Double.self, forKey: .reconnectMaxSeconds) ?? 30
        maxFrameBytes = try c.decodeIfPresent(Int.self, forKey: .maxFrameBytes) ?? 8 << 20
    }

    public static let schema: StrictConfiguration.Schema = .object([
        "coordinator": .object(["host": .any, "port": .any]),
        "tls": .object(["certificate": .any, "private_key": .any, "ca": .any]),
        "trainer": .object(["kind": .any, "examples": .any, "step": .any, "delay_seconds": .any, "delay_jitter_seconds": .any]),
        "heartbeat_interval_seconds": .any, "reconnect_initial_seconds": .any, "reconnect_max_seconds": .any, "max_frame_bytes": .any,
    ])

    public static func load(path: String, overrides: [String: String] = [:]) throws -> AgentConfiguration {
        let configuration = try StrictConfiguration.load(AgentConfiguration.self, from: path, schema: schema, overrides: overrides)
        try configuration.validate()
        return configuration
    }

    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        guard trainer.kind == "benchmark" else {
            throw Failure("trainer.kind \"\(trainer.kind)\" is not available yet; use \"benchmark\"")
        }
        guard trainer.examples > 0 else { throw Failure("trainer.examples must be positive") }
        guard heartbeatIntervalSeconds > 0 else { throw Failure("heartbeat_interval_seconds must be positive") }
        guard reconnectInitialSeconds > 0, reconnectMaxSeconds >= reconnectInitialSeconds else {
            throw Failure("reconnect_initial_seconds must be positive and at most reconnect_max_seconds")
        }
        try TLSConfiguration.makeClientConfiguration(certificateChainPath: tls.certificate, privateKeyPath: tls.privateKey, trustRootPath: tls.ca)
            .validateFiles()
    }

    /// The trainer the configuration names.
    public func makeTrainer() -> any LocalTrainer {
        BenchmarkTrainer(
            step: trainer.step, exampleCount: trainer.examples, delaySeconds: trainer.delaySeconds,
            delayJitterSeconds: trainer.delayJitterSeconds)
    }
}
