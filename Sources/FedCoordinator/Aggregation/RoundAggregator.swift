import FedCore

/// One way of combining a round's accepted updates into the step of the ``GlobalModel``: the
/// weighted mean (``MeanAggregator``), a robust strategy (``RobustAggregator``), or the masked
/// sum of a secure attempt (``SecureRound``).
///
/// The coordinator calls every method under its aggregator lock: the pulls add (several may
/// wait for the lock, none adds at the same time), the commit closes under the model's write
/// lock too, and the driver resets when an attempt ends or starts.
protocol RoundAggregator: AnyObject {
    /// Takes an update the engine accepted; its spool is the aggregator's from now on, whatever
    /// happens (it goes back to the pool once read). `closesRound`: the engine closes the round
    /// with this update, so the close is about to read it anyway.
    func add(_ update: AcceptedUpdate, closesRound: Bool) throws

    /// Combines every update added since the last reset and applies the result to `model` with
    /// the server optimizer, then forgets them. Throws, leaving `model` as it was, when an update
    /// cannot be read back; a step that gives a non-finite model is the caller's to undo.
    func close(into model: inout GlobalModel) throws -> RoundCombination

    /// Forgets every update added since the last close (a failed attempt, a new one).
    func reset()
}

/// An update the engine accepted: the site's spooled tensors and its weight (the example count
/// it announced).
struct AcceptedUpdate {
    var agent: String
    var spool: UpdateSpool
    var weight: UInt64
}

/// What a close did, beyond stepping the model.
struct RoundCombination {
    var fingerprint: ModelFingerprinter.Fingerprint
    /// The sites whose updates a robust strategy combined (all but Krum's rejects); nil for a mean.
    var combined: [String]?
    /// What stage 3 of secure aggregation recovered; nil for a plaintext round.
    var unmasked: UnmaskOutcome?
}

/// What stage 3 of secure aggregation produced, for the round record.
struct UnmaskOutcome {
    var survivors: [String]
    var recovered: [String]
    var totalWeight: UInt32
    var recoverySeconds: Double
}
