import FedCore
import Foundation

/// What the coordinator accepts of one site's update (`update` in `coordinator.json`): every
/// figure a site sends is checked against these before anything uses it.
public struct UpdateBounds: ConfigurationSection, Sendable, Equatable {
    /// The most training examples one update may claim (its weight in the mean). Bounded by
    /// 2^32, so that no number of updates can overflow the mean's total weight.
    public var maxExampleCount: UInt64 = 10_000_000
    /// The largest magnitude of any value of a plaintext update (a model delta); larger values
    /// refuse the update. Keeps the mean and the server step far from Float32's range.
    public var maxAbs = 1e4
    /// The largest L2 norm of a plaintext update; 0 checks none (a legitimate norm grows with
    /// the model's size, so it has no default that fits every model).
    public var maxL2Norm = 0.0

    public init() {}

    public static var fields: [ConfigurationField<UpdateBounds>] {
        [.field("max_example_count", \.maxExampleCount), .field("max_abs", \.maxAbs), .field("max_l2_norm", \.maxL2Norm)]
    }

    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        guard maxExampleCount >= 1, maxExampleCount <= 1 << 32 else {
            throw Failure("update.max_example_count must be between 1 and 4294967296 (it is \(maxExampleCount))")
        }
        guard maxAbs > 0, maxAbs <= Double(Float.greatestFiniteMagnitude) else {
            throw Failure("update.max_abs must be positive and at most 3.4e38, the largest Float32 (it is \(maxAbs))")
        }
        guard maxL2Norm >= 0, maxL2Norm.isFinite else { throw Failure("update.max_l2_norm must be ≥ 0 (0: no norm check)") }
    }
}

/// What one peer, and all of them together, may hold of the coordinator (`limits`).
public struct PeerLimits: ConfigurationSection, Sendable, Equatable {
    /// Seconds a connection has, from its TCP accept, to finish the handshake and Join.
    public var joinTimeoutSeconds = 10.0
    /// Calls a peer may have open at once on one connection; more are refused RESOURCE_EXHAUSTED.
    public var maxCallsPerConnection = 32
    /// Connections open at once (handshaking or joined); more are closed at accept.
    public var maxConnections = 512
    /// A send that makes no progress for this long cuts the peer (it becomes a straggler).
    public var sendStallSeconds = 15.0
    /// An `agent_refused` record per address and reason at most this often; the next one counts
    /// the refusals in between.
    public var refusalLogIntervalSeconds = 60.0

    public init() {}

    public static var fields: [ConfigurationField<PeerLimits>] {
        [
            .field("join_timeout_seconds", \.joinTimeoutSeconds), .field("max_calls_per_connection", \.maxCallsPerConnection),
            .field("max_connections", \.maxConnections), .field("send_stall_seconds", \.sendStallSeconds),
            .field("refusal_log_interval_seconds", \.refusalLogIntervalSeconds),
        ]
    }

    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        guard joinTimeoutSeconds > 0, joinTimeoutSeconds.isFinite, sendStallSeconds > 0, sendStallSeconds.isFinite else {
            throw Failure("limits.join_timeout_seconds and limits.send_stall_seconds must be positive")
        }
        guard (4...4096).contains(maxCallsPerConnection) else {
            throw Failure("limits.max_calls_per_connection must be between 4 and 4096 (it is \(maxCallsPerConnection))")
        }
        guard (1...100_000).contains(maxConnections) else {
            throw Failure("limits.max_connections must be between 1 and 100000 (it is \(maxConnections))")
        }
        guard refusalLogIntervalSeconds >= 0, refusalLogIntervalSeconds.isFinite else {
            throw Failure("limits.refusal_log_interval_seconds must be ≥ 0 (0 records every refusal)")
        }
    }
}

/// Free text from a site (a failure message, a data problem), made safe to log and to keep.
public enum SiteText {
    /// Bytes of UTF-8 kept of a site's message.
    public static let maxBytes = 1024

    /// `text` with control characters (line breaks, escapes, NUL) replaced by spaces, cut to
    /// ``maxBytes`` bytes of UTF-8 on a character boundary ("…" marks a cut). O(length).
    public static func clean(_ text: String, maxBytes: Int = maxBytes) -> String {
        let fits = text.utf8.count <= maxBytes
        let budget = fits ? maxBytes : maxBytes - "…".utf8.count
        var out = ""
        var bytes = 0
        for scalar in text.unicodeScalars {
            let category = scalar.properties.generalCategory
            let kept: Unicode.Scalar = category == .control || category == .format ? " " : scalar
            bytes += UTF8.width(kept)
            if bytes > budget { break }
            out.unicodeScalars.append(kept)
        }
        return fits ? out : out + "…"
    }
}
