/// Names one secure attempt: the FL round it belongs to, which attempt at that round, and which
/// start of the coordinator on its state folder (the epoch, ``CheckpointStore/nextEpoch(atLeast:)``).
/// ``wire`` packs them into FLSECAGG-v1's `round_id`, the one number agents see.
struct SecureRoundID: Hashable, Sendable, CustomStringConvertible {
    let epoch: UInt64
    /// The FL round (0 for the statistics that freeze the standardization before round 1).
    let round: UInt64
    let attempt: Int

    init(epoch: UInt64, round: UInt64, attempt: Int) {
        precondition(epoch < 1 << 20 && round < 1 << 28, "secure round ids hold 2^20 starts and 2^28 rounds")
        self.epoch = epoch
        self.round = round
        self.attempt = attempt
    }

    /// `epoch << 44 | round << 16 | attempt`. The epoch leads, so that ids rise across restarts
    /// whatever round a crash lost: a coordinator killed after announcing round R+1 retries round
    /// R with a larger id than any its agents saw (agents refuse an id they have seen, as the
    /// spec asks).
    var wire: UInt64 { epoch << 44 | round << 16 | UInt64(attempt & 0xFFFF) }

    var description: String { "round \(round) attempt \(attempt) (epoch \(epoch))" }
}
