/// One line of the round log (JSON Lines): its place in the hash chain and the ``RoundLogEvent``
/// it records, all in one flat JSON object (`seq`, `type`, `time`, `prev_sha256` and the
/// event's fields), keys sorted.
public struct RoundLogRecord: Codable, Sendable, Equatable {
    /// Position in the log, from 1.
    public var seq: UInt64 = 0
    /// Wall-clock time of the record, ISO 8601 UTC.
    public var time: String = ""
    /// SHA-256 (hex) of the previous line's bytes; 64 zeros for the first record.
    public var prevSHA256: String = ""
    public var event: RoundLogEvent

    /// A record of `event`; ``RoundLog/append(_:)`` fills in its place in the chain.
    public init(_ event: RoundLogEvent) { self.event = event }

    /// The record's `type` field.
    public var type: String { event.kind.rawValue }

    /// The round this record commits (record `round`), if it is one.
    public var committedRound: RoundLogEvent.RoundClosed? {
        if case .round(let round) = event { round } else { nil }
    }

    /// The attempt this record fails (record `attempt_failed`), if it is one.
    public var failedAttempt: RoundLogEvent.RoundClosed? {
        if case .attemptFailed(let attempt) = event { attempt } else { nil }
    }

    enum CodingKeys: String, CodingKey {
        case seq, type, time, prevSHA256 = "prev_sha256"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        seq = try container.decode(UInt64.self, forKey: .seq)
        time = try container.decode(String.self, forKey: .time)
        prevSHA256 = try container.decode(String.self, forKey: .prevSHA256)
        let type = try container.decode(String.self, forKey: .type)
        guard let kind = RoundLogEvent.Kind(rawValue: type) else {
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container, debugDescription: "unknown record type '\(SiteText.clean(type))'")
        }
        event = try RoundLogEvent.decode(kind, from: decoder)
    }

    /// The envelope's fields and the event's, in one object.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(seq, forKey: .seq)
        try container.encode(type, forKey: .type)
        try container.encode(time, forKey: .time)
        try container.encode(prevSHA256, forKey: .prevSHA256)
        try event.payload.encode(to: encoder)
    }
}

extension Sequence<RoundLogRecord> {
    /// The payloads of every record whose payload is a `kind`, in log order (for
    /// ``RoundLogEvent/RoundClosed``: committed rounds and failed attempts both).
    public func events<Payload: RoundLogPayload>(_ kind: Payload.Type) -> [Payload] {
        compactMap { $0.event.payload as? Payload }
    }

    /// The committed rounds, in log order.
    public var committedRounds: [RoundLogEvent.RoundClosed] { compactMap(\.committedRound) }
}
