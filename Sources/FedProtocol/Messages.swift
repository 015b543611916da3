import FedHashing
import FedSecAgg
import FedWire

/// Swift values of the messages in `proto/fedcoord.proto`. See the proto file for who sends
/// each message and when. All are plain `Sendable` values except ``TensorChunk``, whose bytes
/// are a ``ByteView`` so that 4 MiB chunks are never copied on their way through.

/// The wire protocol this build speaks.
public let fedcoordProtocolVersion: UInt32 = 1
/// This build's software version.
public let fedcoordSoftwareVersion = "0.1.0"

public struct DataSchemaSummary: Sendable, Equatable {
    public var featureColumns: [String] = []
    public var labelColumn = ""
    public var rowCount: UInt64 = 0
    public var schemaSHA256: [UInt8] = []
    public init(featureColumns: [String] = [], labelColumn: String = "", rowCount: UInt64 = 0, schemaSHA256: [UInt8] = []) {
        self.featureColumns = featureColumns
        self.labelColumn = labelColumn
        self.rowCount = rowCount
        self.schemaSHA256 = schemaSHA256
    }
}

public struct Hello: Sendable, Equatable {
    public var protocolVersion: UInt32 = fedcoordProtocolVersion
    public var softwareVersion = "fedagent \(fedcoordSoftwareVersion)"
    public var agentName = ""
    public var schema: DataSchemaSummary?
    public init(protocolVersion: UInt32 = fedcoordProtocolVersion, softwareVersion: String = "fedagent \(fedcoordSoftwareVersion)",
                agentName: String = "", schema: DataSchemaSummary? = nil) {
        self.protocolVersion = protocolVersion
        self.softwareVersion = softwareVersion
        self.agentName = agentName
        self.schema = schema
    }
}

public struct Welcome: Sendable, Equatable {
    public var protocolVersion: UInt32 = fedcoordProtocolVersion
    public var softwareVersion = "fedcoord \(fedcoordSoftwareVersion)"
    public var agentID = ""
    public var federation = ""
    public var heartbeatIntervalMs: UInt32 = 0
    /// The federation's model schema as canonical JSON; empty for a raw tensor model.
    public var modelSchemaJSON = ""
    public init(protocolVersion: UInt32 = fedcoordProtocolVersion, softwareVersion: String = "fedcoord \(fedcoordSoftwareVersion)",
                agentID: String = "", federation: String = "", heartbeatIntervalMs: UInt32 = 0, modelSchemaJSON: String = "") {
        self.protocolVersion = protocolVersion
        self.softwareVersion = softwareVersion
        self.agentID = agentID
        self.federation = federation
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.modelSchemaJSON = modelSchemaJSON
    }
}

public struct DataReport: Sendable, Equatable {
    public var summary: DataSchemaSummary
    /// Empty when the data matches the schema.
    public var problem: String
    public init(summary: DataSchemaSummary, problem: String = "") {
        self.summary = summary
        self.problem = problem
    }
}

public struct StatisticsRequest: Sendable, Equatable {
    public var featureCount: UInt32
    /// Set when the statistics go through secure aggregation.
    public var secureAggregation: SecureAggregationTask?
    public init(featureCount: UInt32, secureAggregation: SecureAggregationTask? = nil) {
        self.featureCount = featureCount
        self.secureAggregation = secureAggregation
    }
}

/// A secure statistics session's masked vector (answer to MaskedInput).
public struct MaskedVector: Sendable, Equatable {
    public var roundID: UInt64
    public var elements: [UInt32]
    public init(roundID: UInt64, elements: [UInt32]) {
        self.roundID = roundID
        self.elements = elements
    }
}

/// The `FeatureStatistics` message: per feature, count, mean and sum of squared deviations.
public struct FeatureStatisticsMessage: Sendable, Equatable {
    public var counts: [UInt64]
    public var means: [Double]
    public var m2: [Double]
    public init(counts: [UInt64], means: [Double], m2: [Double]) {
        self.counts = counts
        self.means = means
        self.m2 = m2
    }
}

public struct Heartbeat: Sendable, Equatable {
    public var sequence: UInt64 = 0
    public var sentUnixMs: UInt64 = 0
    public var activity = ""
    public init(sequence: UInt64 = 0, sentUnixMs: UInt64 = 0, activity: String = "") {
        self.sequence = sequence
        self.sentUnixMs = sentUnixMs
        self.activity = activity
    }
}

public struct TrainTask: Sendable, Equatable {
    public var roundID: UInt64 = 0
    public var modelVersion: UInt64 = 0
    public var modelSHA256: [UInt8] = []
    public var localEpochs: UInt32 = 1
    public var batchSize: UInt32 = 32
    public var learningRate: Double = 0.1
    public var proximalMu: Double = 0
    public var deadlineUnixMs: UInt64 = 0
    public var seed: UInt64 = 0
    public var tensorCount: UInt32 = 0
    public var localOptimizer = "sgd"
    public var momentum: Double = 0
    public var l2: Double = 0
    public var featureMeans: [Double] = []
    public var featureScales: [Double] = []
    /// Set when the round runs under secure aggregation.
    public var secureAggregation: SecureAggregationTask?
    /// The round log's chain head when the task was made: the last record's seq and the
    /// SHA-256 of its line (32 bytes; empty from a coordinator that sends none).
    public var logSeq: UInt64 = 0
    public var logHeadSHA256: [UInt8] = []
    public init() {}
}

/// The secure-aggregation part of a task: the attempt's configuration and the agent's index.
public struct SecureAggregationTask: Sendable, Equatable {
    public var config: SecAggConfig
    public var index: UInt32
    /// With distributed DP: the federation's ε at `delta` once this round commits.
    public var projectedEpsilon: Double?
    public var delta: Double?
    public init(config: SecAggConfig, index: UInt32, projectedEpsilon: Double? = nil, delta: Double? = nil) {
        self.config = config
        self.index = index
        self.projectedEpsilon = projectedEpsilon
        self.delta = delta
    }
}

/// AdvertiseKeys, ShareKeysRequest, ShareKeysResponse, MaskedInputRequest, UnmaskRequest and
/// UnmaskResponse: the FLSECAGG-v1 stage messages; `roundID` is the attempt's secure round id.
public struct AdvertiseKeysMessage: Sendable, Equatable {
    public var roundID: UInt64
    public var keys: AdvertisedKeys
    public init(roundID: UInt64, keys: AdvertisedKeys) {
        self.roundID = roundID
        self.keys = keys
    }
}

public struct ShareKeysRequest: Sendable, Equatable {
    public var roundID: UInt64
    public var keys: [AdvertisedKeys]
    public init(roundID: UInt64, keys: [AdvertisedKeys]) {
        self.roundID = roundID
        self.keys = keys
    }
}

public struct ShareKeysResponse: Sendable, Equatable {
    public var roundID: UInt64
    public var index: UInt32
    public var commitment: [UInt8]
    public var outgoing: [EncryptedShare]
    public init(roundID: UInt64, index: UInt32, commitment: [UInt8], outgoing: [EncryptedShare]) {
        self.roundID = roundID
        self.index = index
        self.commitment = commitment
        self.outgoing = outgoing
    }
}

public struct MaskedInputRequest: Sendable, Equatable {
    public var roundID: UInt64
    public var survivors: [UInt32]
    public var incoming: [EncryptedShare]
    public init(roundID: UInt64, survivors: [UInt32], incoming: [EncryptedShare]) {
        self.roundID = roundID
        self.survivors = survivors
        self.incoming = incoming
    }
}

public struct UnmaskRequest: Sendable, Equatable {
    public var roundID: UInt64
    public var survivors: [UInt32]
    public var dropped: [UInt32]
    public init(roundID: UInt64, survivors: [UInt32], dropped: [UInt32]) {
        self.roundID = roundID
        self.survivors = survivors
        self.dropped = dropped
    }
}

public struct UnmaskResponse: Sendable, Equatable {
    public var roundID: UInt64
    public var index: UInt32
    public var shares: [RevealedShare]
    public init(roundID: UInt64, index: UInt32, shares: [RevealedShare]) {
        self.roundID = roundID
        self.index = index
        self.shares = shares
    }
}

/// Element type of a tensor stream.
public struct DType: Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let unspecified = DType(rawValue: 0)
    public static let float32 = DType(rawValue: 1)
    /// Elements of Z_2^32 (masked inputs).
    public static let uint32 = DType(rawValue: 2)
    /// Bytes per element, or nil for an unknown type.
    public var elementSize: Int? { self == .float32 || self == .uint32 ? 4 : nil }
}

public struct TensorHeader: Sendable, Equatable {
    public var name: String
    public var shape: [UInt64]
    public var dtype: DType = .float32
    public var totalBytes: UInt64
    public var chunkBytes: UInt32
    public init(name: String, shape: [UInt64], dtype: DType = .float32, totalBytes: UInt64, chunkBytes: UInt32) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.totalBytes = totalBytes
        self.chunkBytes = chunkBytes
    }
}

public struct TensorChunk: Sendable {
    public var offset: UInt64
    public var data: ByteView
    public init(offset: UInt64, data: ByteView) {
        self.offset = offset
        self.data = data
    }
}

/// The end of a tensor stream: the CRC-32C of all its bytes.
public struct TensorTrailer: Sendable, Equatable {
    public var crc32c: UInt32
    public init(crc32c: UInt32) { self.crc32c = crc32c }
}

public struct UpdateReady: Sendable, Equatable {
    public var roundID: UInt64 = 0
    public var modelVersion: UInt64 = 0
    public var exampleCount: UInt64 = 0
    public var updateBytes: UInt64 = 0
    public var trainLoss: Double = 0
    public var trainSeconds: Double = 0
    public var tensorCount: UInt32 = 0
    /// Set when local training failed; nothing is to be pulled.
    public var failure = ""
    public init() {}
}

public struct FetchUpdate: Sendable, Equatable {
    public var roundID: UInt64
    public var modelVersion: UInt64
    public init(roundID: UInt64, modelVersion: UInt64) {
        self.roundID = roundID
        self.modelVersion = modelVersion
    }
}

public struct CancelTask: Sendable, Equatable {
    public var roundID: UInt64
    public var reason: String
    public init(roundID: UInt64, reason: String) {
        self.roundID = roundID
        self.reason = reason
    }
}

public struct EvaluationRequest: Sendable, Equatable {
    public var roundID: UInt64 = 0
    public var modelVersion: UInt64 = 0
    public var modelSHA256: [UInt8] = []
    public var tensorCount: UInt32 = 0
    public var featureMeans: [Double] = []
    public var featureScales: [Double] = []
    public init() {}
}

public struct EvaluationResult: Sendable, Equatable {
    public var roundID: UInt64 = 0
    public var exampleCount: UInt64 = 0
    public var loss: Double = 0
    public var accuracy: Double = 0
    /// Nil when the holdout holds a single class.
    public var rocAUC: Double?
    public init() {}
}

/// The body of an envelope: one message of the protocol.
public enum Message: Sendable {
    case hello(Hello)
    case welcome(Welcome)
    case heartbeat(Heartbeat)
    case trainTask(TrainTask)
    case tensorHeader(TensorHeader)
    case tensorChunk(TensorChunk)
    case tensorTrailer(TensorTrailer)
    case updateReady(UpdateReady)
    case fetchUpdate(FetchUpdate)
    case cancelTask(CancelTask)
    case evaluationRequest(EvaluationRequest)
    case evaluationResult(EvaluationResult)
    case empty
    case dataReport(DataReport)
    case statisticsRequest(StatisticsRequest)
    case featureStatistics(FeatureStatisticsMessage)
    case advertiseKeys(AdvertiseKeysMessage)
    case shareKeysRequest(ShareKeysRequest)
    case shareKeysResponse(ShareKeysResponse)
    case maskedInputRequest(MaskedInputRequest)
    case unmaskRequest(UnmaskRequest)
    case unmaskResponse(UnmaskResponse)
    case maskedVector(MaskedVector)

    /// The message's name, for errors ("expected Welcome, got TensorChunk").
    public var name: String {
        switch self {
        case .hello: "Hello"
        case .welcome: "Welcome"
        case .heartbeat: "Heartbeat"
        case .trainTask: "TrainTask"
        case .tensorHeader: "TensorHeader"
        case .tensorChunk: "TensorChunk"
        case .tensorTrailer: "TensorTrailer"
        case .updateReady: "UpdateReady"
        case .fetchUpdate: "FetchUpdate"
        case .cancelTask: "CancelTask"
        case .evaluationRequest: "EvaluationRequest"
        case .evaluationResult: "EvaluationResult"
        case .empty: "Empty"
        case .dataReport: "DataReport"
        case .statisticsRequest: "StatisticsRequest"
        case .featureStatistics: "FeatureStatistics"
        case .advertiseKeys: "AdvertiseKeys"
        case .shareKeysRequest: "ShareKeysRequest"
        case .shareKeysResponse: "ShareKeysResponse"
        case .maskedInputRequest: "MaskedInputRequest"
        case .unmaskRequest: "UnmaskRequest"
        case .unmaskResponse: "UnmaskResponse"
        case .maskedVector: "MaskedVector"
        }
    }
}
