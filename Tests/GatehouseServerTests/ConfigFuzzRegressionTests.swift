import Foundation
import GatehouseCore
import GatehouseServer
import Testing

/// Inputs Fuzz/fuzz-config found, replayed: loading a config gives the same issues every time.
struct ConfigFuzzRegressionTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/fuzz-config")

    @Test func loadingIsDeterministic() async throws {
        try await offThePool {
            for name in try FileManager.default.contentsOfDirectory(atPath: Self.folder.path) {
                let data = try Data(contentsOf: Self.folder.appendingPathComponent(name))
                let text = String(decoding: data, as: UTF8.self)
                let loader = ConfigLoader(environment: [:])
                let first = loader.load(yaml: text).issues
                let second = loader.load(yaml: text).issues
                #expect(first == second, "\(name): \(first) vs \(second)")
            }
        }
    }
}
