// swift-tools-version: 6.1
// libFuzzer targets for Gatehouse, a package of its own so they never slow the main build or
// CI. Build and run them with `make fuzz` (FUZZ_SECONDS each); by hand:
//
//   swift build -c release --scratch-path ../.build-fuzz --toolset "$PWD/fuzz-toolset.json"
//
// (fuzz-toolset.json adds -sanitize=fuzzer,address for the target platform only; -Xswiftc
// would also reach the EmbedFiles plugin's build-time tool, which cannot link with libFuzzer.)
//   ../.build-fuzz/release/fuzz-json -max_total_time=60 corpus/fuzz-json seeds/fuzz-json
//
// Each target defines LLVMFuzzerTestOneInput and checks properties beyond "does not crash"
// (round trips, escaping); what they found is kept as regression tests in the main suite.
import PackageDescription

let driver: Target.Dependency = "CFuzzDriver"
let core: Target.Dependency = .product(name: "GatehouseCore", package: "gatehouse")
let signatures: Target.Dependency = .product(name: "GatehouseSignatures", package: "gatehouse")
let configFile: Target.Dependency = .product(name: "GatehouseConfigFile", package: "gatehouse")

let package = Package(
    name: "GatehouseFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "gatehouse", path: "..")],
    targets: [
        // Declares libFuzzer's LLVMFuzzerRunDriver, which each target's entry point calls.
        .target(name: "CFuzzDriver"),
        .executableTarget(name: "fuzz-json", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-intake", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-routing", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-policy", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-markdown", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-items", dependencies: [driver, core]),
        .executableTarget(name: "fuzz-callbacks", dependencies: [driver, core, signatures]),
        .executableTarget(name: "fuzz-config", dependencies: [driver, core, configFile]),
    ]
)
