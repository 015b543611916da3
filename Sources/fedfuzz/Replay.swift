import FedWire
import Foundation

/// Built by `make fuzz` (with `-DFEDFUZZ_LIBFUZZER`): hands its arguments to libFuzzer, which
/// runs the target `FEDFUZZ_TARGET` names. The plain build: `fedfuzz TARGET FILE|DIR …` runs
/// every file once through the target (the committed seed corpus, or a crash libFuzzer saved),
/// for the test suite and for reproducing.
@main
struct FedFuzz {
    static func main() {
        WireProcess.ignoreBrokenPipeSignal()
        #if FEDFUZZ_LIBFUZZER
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzTestOneInput))
        #else
        replay()
        #endif
    }

    static func replay() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count >= 2 else {
            FileHandle.standardError.write(Data("usage: fedfuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE|DIR …\n".utf8))
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("fedfuzz: no such file or folder '\(path)'\n".utf8))
                exit(2)
            }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("\(name): \(count) inputs, none crashed")
    }
}

#if FEDFUZZ_LIBFUZZER
/// libFuzzer's driver (libclang_rt.fuzzer): parses its flags from the arguments, then fuzzes.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif
