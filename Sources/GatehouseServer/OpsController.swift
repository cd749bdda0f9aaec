import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore
import Prometheus
import Synchronization

/// Liveness, readiness and Prometheus metrics. These answer without a token: probes and
/// scrapers rarely carry one, and nothing here is secret.
struct OpsController {
    let database: any StoreDatabase
    let registry: PrometheusCollectorRegistry?
    let state: ServerState

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/healthz") { _, _ in Response.json(.object(.init([("status", .string("ok"))]))) }
        router.get("/readyz") { _, _ in
            guard !state.isDraining else { throw Problem.unavailable("shutting down") }
            do {
                _ = try await database.read { db in try db.value(Int.self, "SELECT 1") }
            } catch {
                throw Problem.unavailable("the database cannot be read: \(error)")
            }
            return Response.json(.object(.init([("status", .string("ready"))])))
        }
        router.get("/metrics") { _, _ in
            var bytes: [UInt8] = []
            registry?.emit(into: &bytes)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}

/// Process-wide flags the controllers read.
public final class ServerState: Sendable {
    private let draining = Atomic<Bool>(false)
    private let drainStart = Mutex<ContinuousClock.Instant?>(nil)
    public init() {}
    public var isDraining: Bool { draining.load(ordering: .relaxed) }
    public func startDraining() {
        drainStart.withLock { $0 = $0 ?? .now }
        draining.store(true, ordering: .relaxed)
    }
    /// When the graceful shutdown began (the shutdown deadline counts from there).
    public var drainingSince: ContinuousClock.Instant? { drainStart.withLock { $0 } }
}
