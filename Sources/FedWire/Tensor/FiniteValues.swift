import CKernels

/// Finiteness of Float32 tensor bytes, the check every update passes before it is sent or added.
public enum FiniteValues {
    /// The index of the first NaN or infinity among little-endian Float32 values that may sit at
    /// any alignment (a chunk decoded in place starts wherever the frame put it), or nil when all
    /// are finite. One vectorized pass (AVX2 when the CPU has it), no allocation.
    public static func firstNonFinite(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let index = fed_first_nonfinite_f32(base, bytes.count / 4)
        return index < 0 ? nil : index
    }
}
