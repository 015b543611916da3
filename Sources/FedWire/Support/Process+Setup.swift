import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Process-wide set-up every FedCoord executable and test process runs first.
public enum WireProcess {
    /// Ignores `SIGPIPE`, so that writing to a reset peer fails with `EPIPE` instead of killing the
    /// process (OpenSSL writes with `write(2)`, which cannot take `MSG_NOSIGNAL`). Idempotent.
    public static func ignoreBrokenPipeSignal() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Keeps multi-MiB buffers on the warm heap instead of fresh `mmap` pages, which makes packing
    /// and unpacking 4 MiB tensor chunks several times faster (swift-c-interop.md §6). Executables
    /// call this at start; it changes glibc's allocator for the whole process.
    @discardableResult
    public static func tuneAllocatorForLargeBuffers() -> Bool {
        fed_tune_malloc_for_large_buffers() == 1
    }

    /// Keeps freed heap memory in the process instead of returning it to the kernel: memory stays
    /// at its high-water mark, and model-sized buffers allocated anew every round cost no page
    /// faults. For agents, whose memory is a few models; not for the coordinator, whose peak
    /// memory is budgeted. Call after ``tuneAllocatorForLargeBuffers()``.
    @discardableResult
    public static func keepFreedHeapMemory() -> Bool {
        fed_keep_freed_heap_memory() == 1
    }

    /// Line-buffers standard output, so that progress lines appear while a command runs.
    public static func lineBufferStandardOutput() {
        fed_line_buffer_stdout()
    }

    /// Raises the soft limit on open descriptors to the hard limit (commonly 1,024 → 524,288),
    /// so that a server's connection limit, not the default, bounds its sockets. Returns the
    /// soft limit now in force.
    @discardableResult
    public static func raiseDescriptorLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return UInt64(limit.rlim_cur)
    }
}
