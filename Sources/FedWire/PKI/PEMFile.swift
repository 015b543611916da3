import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Reading and writing the PEM files of the federation's PKI.
enum PEMFile {
    /// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
    /// Private keys are written 0600 from the first byte: the file is created with that mode.
    static func write(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw WireError(.certificate, "cannot create '\(temporary)': \(String(cString: strerror(errno)))") }
        fchmod(fd, mode)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let message = String(cString: strerror(errno))
                Glibc.close(fd)
                unlink(temporary)
                throw WireError(.certificate, "cannot write '\(path)': \(message)")
            }
            offset += n
        }
        fsync(fd)
        Glibc.close(fd)
        guard rename(temporary, path) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temporary)
            throw WireError(.certificate, "cannot rename '\(temporary)' to '\(path)': \(message)")
        }
    }

    /// Runs `body` with a memory BIO and returns what it wrote.
    static func withMemoryBIO(_ what: String, _ body: (OpaquePointer) -> Int32) throws -> [UInt8] {
        guard let bio = BIO_new(BIO_s_mem()) else { throw WireError(.certificate, "BIO_new failed") }
        defer { BIO_free(bio) }
        guard body(bio) == 1 else {
            throw WireError(.certificate, "cannot encode \(what): \(OpenSSLErrorStack.describe(fallback: "unknown"))")
        }
        var data: UnsafeMutablePointer<CChar>?
        let length = shim_BIO_get_mem_data(bio, &data)
        guard length > 0, let data else { return [] }
        return data.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
    }

    /// Opens `path` for reading as a BIO, with a clear error when it is missing.
    static func withFileBIO<T>(_ path: String, _ what: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        ERR_clear_error()
        guard let bio = BIO_new_file(path, "r") else {
            throw WireError(.certificate, "cannot open the \(what) '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { BIO_free(bio) }
        return try body(bio)
    }
}
