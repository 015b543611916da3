import FedCore
import Foundation

/// How a round's updates combine into the delta the server optimizer applies (`strategy`).
public enum AggregationStrategy: String, ConfigurationChoice {
    /// The mean weighted by example counts (FedAvg and the adaptive optimizers).
    case mean
    /// The coordinate-wise median, each site counting once.
    case median
    /// The coordinate-wise mean after dropping `robust.trim_fraction` of the values at each end.
    case trimmedMean = "trimmed_mean"
    /// Krum / multi-Krum: the mean (by examples) of the `robust.krum_m` updates closest to their
    /// neighbours, tolerating `robust.krum_f` hostile sites.
    case krum

    /// True for the strategies that need every site's own update (not only their sum).
    public var isRobust: Bool { self != .mean }
}

/// The parameters of the robust strategies (`robust`).
public struct RobustSettings: ConfigurationSection, Sendable, Equatable {
    /// The fraction of values dropped at each end of every coordinate by `trimmed_mean`.
    public var trimFraction = 0.1
    /// Hostile sites Krum tolerates (its f); a round needs at least 2f + 3 updates.
    public var krumF = 1
    /// Updates Krum keeps and averages (its m): 1 is Krum, more is multi-Krum.
    public var krumM = 1

    public init() {}

    public static var fields: [ConfigurationField<RobustSettings>] {
        [.field("trim_fraction", \.trimFraction), .field("krum_f", \.krumF), .field("krum_m", \.krumM)]
    }

    /// Refuses settings `strategy` cannot run with when a round may close with `minUpdates`.
    public func validate(for strategy: AggregationStrategy, minUpdates: Int) throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        guard trimFraction >= 0, trimFraction < 0.5 else {
            throw Failure("robust.trim_fraction must be in [0, 0.5) (it is \(trimFraction)): it is dropped at each end of every coordinate")
        }
        guard strategy == .krum else { return }
        guard krumF >= 0, krumM >= 1 else { throw Failure("robust.krum_f must be ≥ 0 and robust.krum_m ≥ 1") }
        guard minUpdates >= 2 * krumF + 3 else {
            throw Failure("strategy \"krum\" with robust.krum_f \(krumF) needs rounds of at least \(2 * krumF + 3) updates (2f + 3); "
                + "raise selection.min_updates (it is \(minUpdates)) or lower robust.krum_f")
        }
        guard krumM <= minUpdates - krumF else {
            throw Failure("robust.krum_m (\(krumM)) must be at most selection.min_updates − robust.krum_f (\(minUpdates - krumF))")
        }
    }
}
