import GatehouseCore
import GatehouseServices
import GatehouseStore
import Logging
import Metrics
import ServiceLifecycle

/// The one timer behind gates: expiry (with `on_timeout`), reminders and escalation. It
/// sleeps until the earliest deadline stored in the database — so what was due while the
/// server was down happens as soon as it is back — and a gate change on the bus makes it
/// look again (a new gate may be due sooner).
struct GateScheduler: Service {
    let store: GateService
    let bus: Bus
    let logger: Logger
    /// With replicas on one database, only the leader runs the timers (each would fire once
    /// anyway — deadlines are re-read inside the serialised commit — but once is cheaper).
    let ownership: any Ownership
    private let pending = Gauge(label: "gatehouse_gates_pending")

    init(store: GateService, bus: Bus, logger: Logger, ownership: any Ownership = SoleProcess()) {
        self.store = store
        self.bus = bus
        self.logger = logger
        self.ownership = ownership
    }

    func run() async throws {
        // Only gate changes matter here; event commits need not wake it.
        let subscriber = bus.subscribe { message in
            if case .gateChanged = message { return true }
            return false
        }
        var lastCount = ContinuousClock.now - .seconds(60)
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                var wait = Duration.seconds(60)
                if !ownership.isLeader {
                    // Not ours: look again in a second (the leader may be gone by then).
                    _ = await subscriber.next(timeout: .seconds(1))
                    continue
                }
                do {
                    // A read first: most wake-ups (a gate opened or decided) find nothing due,
                    // and need not queue a write transaction behind the event log's commits.
                    var next = try await store.nextDeadline()
                    if let due = next, due <= .now() {
                        let touched = try await store.runDue(now: .now())
                        for gate in touched where gate.state.isClosed {
                            logger.info("gate expired", metadata: ["gate": .string(gate.id), "state": .string(gate.state.rawValue)])
                        }
                        next = try await store.nextDeadline()
                    }
                    if let next {
                        let ms = max(0, next.milliseconds - Timestamp.now().milliseconds)
                        wait = min(wait, .milliseconds(ms))
                    }
                    // The gauge counts every pending gate: once a second is plenty, and a
                    // burst of changes gets its count a second after it began.
                    let sinceCount = ContinuousClock.now - lastCount
                    if sinceCount >= .seconds(1) {
                        pending.record(try await store.pendingCount())
                        lastCount = ContinuousClock.now
                    } else {
                        wait = min(wait, .seconds(1) - sinceCount)
                    }
                } catch {
                    logger.error("gate scheduler failed; retrying", metadata: ["error": .string("\(error)")])
                    wait = .seconds(1)
                }
                if wait <= .zero { continue }
                let deadline = ContinuousClock.now + wait
                // Sleep until the deadline, or until some gate changes; changes that queued up
                // meanwhile are taken as one.
                while ContinuousClock.now < deadline {
                    guard let message = await subscriber.next(timeout: deadline - ContinuousClock.now) else { break }
                    if case .gateChanged = message {
                        subscriber.drain()
                        break
                    }
                }
            }
        } onGracefulShutdown: {
            subscriber.close()
        }
        subscriber.close()
    }
}
