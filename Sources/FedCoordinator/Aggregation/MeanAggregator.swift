import FedCore

/// The plaintext weighted mean (FedAvg and the adaptive server optimizers): updates weighted by
/// their example counts, summed in Float64.
///
/// Accepted updates are parked in their spools (page cache, not the coordinator's memory). A
/// small round's (a target of at most ``Coordinator/defaultSmallRoundUpdates``) all go straight
/// into the mean at its close, so it never touches the sums; a larger round's are added
/// ``updatesPerAdd`` at a time in one pass over the sums while the next ones stream, and the
/// last ones join the mean at the close. The close steps the model on both cores.
///
/// Memory: the sums, 8 bytes per parameter, allocated on a large round's first add; two
/// mapping windows per parked update at the close.
final class MeanAggregator: RoundAggregator {
    private var sums: WeightedMeanAccumulator
    private var parked: [AcceptedUpdate] = []
    private let spools: SpoolPool
    /// Whether updates are added into the sums during the round (a large round) or all left for
    /// the close (a small one).
    private let addsDuringRound: Bool

    /// Updates added into the sums in one pass: each pass reads and writes all the 8-byte sums, so
    /// fewer, wider passes move less memory (a round of 32 updates: seven passes instead of 31).
    static let updatesPerAdd = 4
    /// The window through which the close reads each parked update: small next to the sums of a
    /// large round; in a small round, which has no sums, four times larger (a quarter of the
    /// mappings and unmappings, each unmapping an interrupt to the other core).
    static let closeWindowBytes = 256 << 10
    static let smallRoundCloseWindowBytes = 1 << 20

    init(layout: ModelLayout, spools: SpoolPool, addsDuringRound: Bool) {
        sums = WeightedMeanAccumulator(layout: layout)
        self.spools = spools
        self.addsDuringRound = addsDuringRound
    }

    func add(_ update: AcceptedUpdate, closesRound: Bool) throws {
        parked.append(update)
        guard addsDuringRound, !closesRound, parked.count >= Self.updatesPerAdd else { return }
        let batch = parked
        parked = []
        defer { for update in batch { spools.give(update.spool) } }
        try SpoolMapping.forEachSlice(of: batch.map(\.spool)) { offset, slices in
            sums.add(zip(slices, batch).map { WeightedSlice($0, weight: $1.weight) }, at: offset)
        }
        for update in batch { sums.finishUpdate(weight: update.weight) }
    }

    /// The weighted mean of the sums and the updates still parked, applied by the server
    /// optimizer on both cores (each stepping half of the model).
    func close(into model: inout GlobalModel) throws -> RoundCombination {
        defer { reset() }
        let parts = 2
        // Mapped before the model is touched, so that a failure leaves it as it was; each part
        // maps every parked update for itself (it reads its half in order), through small windows
        // (2 windows per parked update are resident at most).
        let window = addsDuringRound ? Self.closeWindowBytes : Self.smallRoundCloseWindowBytes
        let pending = try (0..<parts).map { _ in
            try parked.map { (mapping: try SpoolMapping($0.spool, windowBytes: window), weight: $0.weight) }
        }
        let sums = sums
        let fingerprint = model.step(parts: parts) { part, range, out in
            sums.mean(range, into: out, pending: pending[part].map { WeightedSlice($0.mapping.slice(range), weight: $0.weight) })
        }
        return RoundCombination(fingerprint: fingerprint)
    }

    func reset() {
        for update in parked { spools.give(update.spool) }
        parked = []
        sums.reset()
    }
}
