import GatehouseCore
import GatehouseStore
import Logging
import Metrics
import ServiceLifecycle

/// The one timer behind gates: expiry (with `on_timeout`), reminders and escalation. It
/// sleeps until the earliest deadline stored in the database — so what was due while the
/// server was down happens as soon as it is back — and a gate change on the bus makes it
/// look again (a new gate may be due sooner).
struct GateScheduler: Service {
    let store: GateStore
    let bus: Bus
    let logger: Logger
    private let pending = Gauge(label: "gatehouse_gates_pending")

    init(store: GateStore, bus: Bus, logger: Logger) {
        self.store = store
        self.bus = bus
        self.logger = logger
    }

    func run() async throws {
        // Only gate changes matter here; event commits need not wake it.
        let subscriber = bus.subscribe { message in
            if case .gateChanged = message { return true }
            return false
        }
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                var wait = Duration.seconds(60)
                do {
                    let touched = try await store.runDue(now: .now())
                    for gate in touched where gate.state.isClosed {
                        logger.info("gate expired", metadata: ["gate": .string(gate.id), "state": .string(gate.state.rawValue)])
                    }
                    pending.record(try await store.pendingCount())
                    if let next = try await store.nextDeadline() {
                        let ms = max(0, next.milliseconds - Timestamp.now().milliseconds)
                        wait = min(wait, .milliseconds(ms))
                    }
                } catch {
                    logger.error("gate scheduler failed; retrying", metadata: ["error": .string("\(error)")])
                    wait = .seconds(1)
                }
                if wait <= .zero { continue }
                let deadline = ContinuousClock.now + wait
                // Sleep until the deadline, or until some gate changes.
                while ContinuousClock.now < deadline {
                    guard let message = await subscriber.next(timeout: deadline - ContinuousClock.now) else { break }
                    if case .gateChanged = message { break }
                }
            }
        } onGracefulShutdown: {
            subscriber.close()
        }
        subscriber.close()
    }
}
