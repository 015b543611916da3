import COpenSSL

/// Reads OpenSSL's thread-local error queue.
enum OpenSSLErrorStack {
    /// Drains the calling thread's error queue into readable reasons ("certificate verify failed").
    static func drain() -> [String] {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if let reason = ERR_reason_error_string(code) {
                reasons.append(String(cString: reason))
            } else {
                var buffer = [CChar](repeating: 0, count: 256)
                ERR_error_string_n(code, &buffer, buffer.count)
                reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return reasons
    }

    /// The drained queue as one phrase, or `fallback` when the queue was empty.
    static func describe(fallback: String) -> String {
        let reasons = drain()
        return reasons.isEmpty ? fallback : reasons.joined(separator: "; ")
    }
}
