/// The vector loops of local training, written with `SIMD8<Float>` so that they vectorize
/// without relying on the optimizer (floating-point reductions are never auto-vectorized).
enum Kernels {
    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func store(_ value: SIMD8<Float>, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD8<Float>.self)
    }

    /// Σ a[i]·b[i] over `count` elements.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var sum0 = SIMD8<Float>(), sum1 = SIMD8<Float>()
        var index = 0
        while index + 16 <= count {
            sum0 += load(a + index) * load(b + index)
            sum1 += load(a + index + 8) * load(b + index + 8)
            index += 16
        }
        if index + 8 <= count {
            sum0 += load(a + index) * load(b + index)
            index += 8
        }
        var sum = (sum0 + sum1).sum()
        while index < count {
            sum += a[index] * b[index]
            index += 1
        }
        return sum
    }

    /// y[i] += alpha·x[i] over `count` elements.
    @inline(__always)
    static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        let factor = SIMD8<Float>(repeating: alpha)
        var index = 0
        while index + 8 <= count {
            store(load(y + index) + factor * load(x + index), y + index)
            index += 8
        }
        while index < count {
            y[index] += alpha * x[index]
            index += 1
        }
    }
}
