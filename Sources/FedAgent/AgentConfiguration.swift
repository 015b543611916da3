import FedCore
import FedWire
import Foundation

/// An agent's configuration file (`agent.json`). Every field is documented in the README (a test
/// checks the table against ``schema``); unknown fields are refused; `--set a.b=value` overrides
/// any field.
public struct AgentConfiguration: ConfigurationSection, Sendable {
    public struct Coordinator: ConfigurationSection, Sendable {
        /// The coordinator's host name or IP address; its certificate must name it.
        public var host = ""
        public var port: UInt16 = 0
        public init() {}
        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
        public static var fields: [ConfigurationField<Coordinator>] { [.required("host", \.host), .required("port", \.port)] }
    }

    public struct TLSFiles: ConfigurationSection, Sendable {
        public var certificate = ""
        public var privateKey = ""
        public var ca = ""
        public init() {}
        public init(certificate: String, privateKey: String, ca: String) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.ca = ca
        }
        public static var fields: [ConfigurationField<TLSFiles>] {
            [.required("certificate", \.certificate), .required("private_key", \.privateKey), .required("ca", \.ca)]
        }
    }

    /// `trainer.kind`: what trains on this site.
    public enum TrainerKind: String, ConfigurationChoice {
        /// The federation's model, trained on `data.csv`.
        case local
        /// The site's own training program (`trainer.command`).
        case command
        /// A deterministic stand-in without data, for benchmarks.
        case benchmark
    }

    public struct Trainer: ConfigurationSection, Sendable {
        public var kind = TrainerKind.local
        public var examples: UInt64 = 100
        public var step: Float = 0.001
        /// Extra seconds every task takes (to play a slow site in demos and straggler drills).
        public var delaySeconds = 0.0
        /// Extra random delay per task, uniform in [0, delay_jitter_seconds).
        public var delayJitterSeconds = 0.0
        /// The site's training program and its arguments (kind "command").
        public var command: [String] = []
        /// Seconds the command may run before it is stopped.
        public var timeoutSeconds = 600.0
        /// Folder for the hand-off files (kind "command"); a private temporary folder by default.
        public var workDir: String?
        public init() {}
        public static var fields: [ConfigurationField<Trainer>] {
            [
                .field("kind", \.kind), .field("command", \.command), .field("timeout_seconds", \.timeoutSeconds), .field("work_dir", \.workDir),
                .field("delay_seconds", \.delaySeconds), .field("delay_jitter_seconds", \.delayJitterSeconds),
                .field("examples", \.examples), .field("step", \.step),
            ]
        }
    }

    /// The site's data (never sent anywhere).
    public struct DataFiles: ConfigurationSection, Sendable {
        /// CSV with a header row; the model schema names the columns used.
        public var csv = ""
        /// Fraction of the rows held out for federated evaluation (when `holdout_csv` is not set).
        public var holdoutFraction = 0.2
        /// A separate CSV to evaluate on instead.
        public var holdoutCSV: String?
        /// Seeds the holdout split.
        public var seed: UInt64 = 1
        public init() {}
        public init(csv: String, holdoutFraction: Double = 0.2, holdoutCSV: String? = nil) {
            self.csv = csv
            self.holdoutFraction = holdoutFraction
            self.holdoutCSV = holdoutCSV
        }
        public static var fields: [ConfigurationField<DataFiles>] {
            [.required("csv", \.csv), .field("holdout_fraction", \.holdoutFraction), .field("holdout_csv", \.holdoutCSV), .field("seed", \.seed)]
        }
        /// The same, as the site trainer takes it.
        public var files: SiteTrainer.DataFiles {
            SiteTrainer.DataFiles(csv: csv, holdoutFraction: holdoutFraction, holdoutCSV: holdoutCSV, seed: seed)
        }
    }

    /// What this site accepts, whatever the coordinator asks.
    public struct Policy: ConfigurationSection, Sendable {
        /// Refuse (PERMISSION_DENIED) any round that does not run under secure aggregation.
        public var requireSecureAggregation = false
        /// Refuse (PERMISSION_DENIED) a round after which the federation's ε would exceed this
        /// (as the coordinator's accountant reports it with the round's DP parameters).
        public var maxEpsilon: Double?
        public init() {}
        public static var fields: [ConfigurationField<Policy>] {
            [.field("require_secure_aggregation", \.requireSecureAggregation), .field("max_epsilon", \.maxEpsilon)]
        }
    }

    /// Drills: behaviour that tests the federation's resilience; off by default.
    public struct Drill: ConfigurationSection, Sendable {
        /// Drop the connection at this secure-aggregation stage in every secure round
        /// ("advertise_keys", "share_keys", "masked_input", "unmask"), then reconnect.
        public var secureDropoutStage: String?
        public init() {}
        public static var fields: [ConfigurationField<Drill>] { [.field("secure_dropout_stage", \.secureDropoutStage)] }
    }

    public var coordinator = Coordinator()
    public var tls = TLSFiles()
    public var policy = Policy()
    public var drill = Drill()
    public var trainer = Trainer()
    public var data: DataFiles?
    public var heartbeatIntervalSeconds = 5.0
    /// First wait before reconnecting; doubles up to `reconnect_max_seconds`, with jitter.
    public var reconnectInitialSeconds = 0.5
    public var reconnectMaxSeconds = 30.0
    public var maxFrameBytes = 8 << 20
    /// Where this site keeps the round-log heads the coordinator showed it (nil: none kept);
    /// `NAME.witness.jsonl` beside the configuration file `NAME.json` when loaded from one.
    public var witnessFile: String?

    /// Placeholders for the required `coordinator` and `tls`: decoding replaces them.
    public init() {}

    public init(coordinator: Coordinator, tls: TLSFiles) {
        self.coordinator = coordinator
        self.tls = tls
    }

    public static var fields: [ConfigurationField<AgentConfiguration>] {
        [
            .required("coordinator", \.coordinator), .required("tls", \.tls), .field("trainer", \.trainer), .field("data", \.data),
            .field("policy", \.policy), .field("drill", \.drill), .field("heartbeat_interval_seconds", \.heartbeatIntervalSeconds),
            .field("reconnect_initial_seconds", \.reconnectInitialSeconds), .field("reconnect_max_seconds", \.reconnectMaxSeconds),
            .field("max_frame_bytes", \.maxFrameBytes), .field("witness_file", \.witnessFile),
        ]
    }

    public static func load(path: String, overrides: [String: String] = [:]) throws -> AgentConfiguration {
        var configuration = try StrictConfiguration.load(AgentConfiguration.self, from: path, overrides: overrides)
        if configuration.witnessFile == nil {
            // agent.json → agent.witness.jsonl beside it: one file per configuration, so two agents
            // configured in one folder never share one.
            let url = URL(fileURLWithPath: path)
            configuration.witnessFile = url.deletingPathExtension().path + ".witness.jsonl"
        }
        try configuration.validate()
        return configuration
    }

    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        switch trainer.kind {
        case .benchmark:
            guard trainer.examples > 0 else { throw Failure("trainer.examples must be positive") }
        case .local, .command:
            guard let data else {
                throw Failure("trainer.kind \"\(trainer.kind.rawValue)\" trains on the site's data: set data.csv to the site's CSV file")
            }
            for path in [data.csv] + (data.holdoutCSV.map { [$0] } ?? []) where !FileManager.default.isReadableFile(atPath: path) {
                throw Failure("the data file '\(path)' cannot be read; check data.csv / data.holdout_csv")
            }
            guard data.holdoutFraction >= 0 && data.holdoutFraction < 1 else {
                throw Failure("data.holdout_fraction must be at least 0 and below 1, not \(data.holdoutFraction)")
            }
            if trainer.kind == .command {
                guard !trainer.command.isEmpty else {
                    throw Failure("trainer.kind \"command\" needs trainer.command, the program and its arguments: [\"python3\", \"train.py\"]")
                }
                guard trainer.timeoutSeconds > 0 else { throw Failure("trainer.timeout_seconds must be positive") }
            }
        }
        guard heartbeatIntervalSeconds > 0 else { throw Failure("heartbeat_interval_seconds must be positive") }
        if let stage = drill.secureDropoutStage, Agent.SecureStage(name: stage) == nil {
            throw Failure("drill.secure_dropout_stage must be advertise_keys, share_keys, masked_input or unmask, not \"\(stage)\"")
        }
        guard reconnectInitialSeconds > 0, reconnectMaxSeconds >= reconnectInitialSeconds else {
            throw Failure("reconnect_initial_seconds must be positive and at most reconnect_max_seconds")
        }
        try TLSConfiguration.makeClientConfiguration(certificateChainPath: tls.certificate, privateKeyPath: tls.privateKey, trustRootPath: tls.ca)
            .validateFiles()
    }

    /// The trainer the configuration names.
    public func makeTrainer() -> any LocalTrainer {
        let site: any LocalTrainer
        switch (trainer.kind, data) {
        case (.local, let data?):
            site = SiteTrainer(files: data.files)
        case (.command, let data?):
            let work = trainer.workDir ?? NSTemporaryDirectory() + "fedagent-\(getpid())"
            site = CommandTrainer(command: trainer.command, timeoutSeconds: trainer.timeoutSeconds, workDirectory: work, files: data.files)
        default:
            return BenchmarkTrainer(
                step: trainer.step, exampleCount: trainer.examples, delaySeconds: trainer.delaySeconds,
                delayJitterSeconds: trainer.delayJitterSeconds)
        }
        guard trainer.delaySeconds > 0 || trainer.delayJitterSeconds > 0 else { return site }
        return SlowedTrainer(site, delaySeconds: trainer.delaySeconds, delayJitterSeconds: trainer.delayJitterSeconds)
    }
}
