import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehousePostgres
import GatehouseServices
import GatehouseStore
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The composition root: `gatehouse serve` and the tests build the server through here.
public enum GatehouseServer {
    /// Refuses what docs/api.md (Access) forbids: listening beyond loopback while no token exists.
    public static func checkProtectedMode(address: ServerAddress, tokens: any TokenStore) throws {
        guard !address.isLoopback else { return }
        if try tokens.activeCountNow() == 0 {
            throw StartupError("""
                refusing to listen on \(address) without access tokens: anyone who can reach it could send events. \
                Create one first (gatehouse token create --name admin --scopes admin --db <db>) or listen on 127.0.0.1.
                """)
        }
    }

    public static func makeRouter(
        config: GatehouseConfig, database: any StoreDatabase, log: EventLog, outbox: any Outbox, registry: PrometheusCollectorRegistry?, state: ServerState,
        desk: GateDesk, callbacks: CallbacksController, pages: TemplateSet?, datasets: DatasetService, events: EventService, auth: Authenticator,
        receiverHealth: @escaping @Sendable () -> [(name: String, health: ReceiverHealth)] = { [] }
    ) -> Router<GatehouseContext> {
        let router = Router(context: GatehouseContext.self)
        router.middlewares.add(ObservabilityMiddleware())
        router.middlewares.add(RequestHygieneMiddleware())
        EventsController(
            events: events,
            auth: auth,
            maxBodyBytes: config.server.maxBodyBytes,
            heartbeat: .milliseconds(max(config.server.sseHeartbeat.milliseconds, 50)),
            streams: StreamGauge(limit: max(1, config.server.maxConnections / 2))
        ).addRoutes(to: router)
        OpsController(database: database, registry: registry, state: state).addRoutes(to: router)
        OpenAPIController().addRoutes(to: router)
        DeliveriesController(outbox: outbox, auth: auth, bus: log.bus, health: receiverHealth).addRoutes(to: router)
        SilencesController(store: SQLSilenceStore(database: database), auth: auth, bus: log.bus, maxBodyBytes: config.server.maxBodyBytes).addRoutes(to: router)
        GatesController(desk: desk, auth: auth, maxBodyBytes: config.server.maxBodyBytes).addRoutes(to: router)
        callbacks.addRoutes(to: router)
        DatasetsController(
            datasets: datasets, auth: auth, waits: desk.waits, baseURL: desk.base, maxBodyBytes: config.server.maxBodyBytes,
            maxImportBytes: config.server.maxImportBytes).addRoutes(to: router)
        GatePageController(desk: desk, templates: pages, maxBodyBytes: config.server.maxBodyBytes).addRoutes(to: router)
        let console = ConsoleController(events: events, desk: desk, outbox: outbox, auth: auth, templates: pages, script: pages?.file("pages/console.js"))
        console.addRoutes(to: router)
        ConsoleOperations(
            console: console, outbox: outbox, silences: SQLSilenceStore(database: database), datasets: datasets, bus: log.bus,
            health: receiverHealth
        ).addRoutes(to: router)
        AnnotateController(
            datasets: datasets, desk: desk, auth: auth, templates: pages,
            script: pages?.file("pages/annotate.js"),
            maxBodyBytes: config.server.maxBodyBytes).addRoutes(to: router)
        return router
    }

    /// Runs until SIGINT/SIGTERM, then stops accepting, lets in-flight requests finish (bounded
    /// by `server.shutdown_timeout`) and closes the database.
    public static func run(config: GatehouseConfig, logger: Logger, registry: PrometheusCollectorRegistry?) async throws {
        try await buildApplication(config: config, logger: logger, registry: registry).run()
    }

    /// The composition root: opens the database and builds every part `serve` runs — stores,
    /// receivers, dispatcher, gate timers, routes — from the configuration. `serve` runs what
    /// it returns; the tests run the same thing in process (`GatehouseApp.withServices`).
    public static func buildApplication(config: GatehouseConfig, logger: Logger, registry: PrometheusCollectorRegistry?) async throws -> GatehouseApp {
        guard let address = ServerAddress(config.server.address) else { throw StartupError("server.address \"\(config.server.address)\" is not HOST:PORT") }
        let database: any StoreDatabase
        do {
            database = try Storage.open(config.storage.location, durability: config.storage.durability, migrate: config.storage.migrate)
        } catch {
            throw StartupError("cannot open the database \(Storage.redacted(config.storage.location)): \(error)")
        }
        try checkProtectedMode(address: address, tokens: SQLTokenStore(database: database))
        let bus = Bus()
        // Replicas on one PostgreSQL database share the bus and split the work.
        let postgres = database as? PostgresStore
        let bridge = postgres.map { PostgresBusBridge(store: $0, bus: bus, logger: logger) }
        let ownership: any Ownership = postgres.map {
            PostgresOwnership(store: $0, receivers: config.receivers.map(\.name), bus: bus, logger: logger)
        } ?? SoleProcess()
        let routes = RouteTree(config.route)
        let resolving = Set(config.receivers.filter(\.sendResolved).map(\.name))
        let log = EventLog(database: database, bus: bus, planner: config.receivers.isEmpty ? nil : DeliveryPlanner(routes: routes, sendResolved: resolving).plan)
        let templates = try loadTemplates(config)
        let receivers = try await makeReceivers(config, templates: templates)
        let outbox = SQLOutbox(log: log)
        let state = ServerState()
        let autoDecide = ProcessInfo.processInfo.environment["GATEHOUSE_AUTO_DECIDE"].flatMap { $0.isEmpty ? nil : $0 }
        if let autoDecide, !["approve", "reject"].contains(autoDecide) {
            throw StartupError("GATEHOUSE_AUTO_DECIDE must be approve or reject (got \"\(autoDecide)\")")
        }
        let gates = GateService(repository: SQLGateRepository(log: log), bus: bus, autoDecide: autoDecide)
        let baseURL = BaseURL(config.server.publicURL ?? "http://\(address)")
        let desk = GateDesk(
            gates: gates, signer: LinkSigner(key: try database.serverSecret("links")), baseURL: baseURL,
            receiverNames: Set(config.receivers.map(\.name)), bus: bus)
        // One libcurl multi handle for everything the server sends: deliveries and the
        // follow-ups of chat callbacks (Slack response_url).
        let client: CurlMultiClient? = receivers.isEmpty ? nil : CurlMultiClient()
        let callbacks = CallbacksController(
            desk: desk, slack: try callbackVerifiers(config).slack, discord: try callbackVerifiers(config).discord, client: client,
            maxBodyBytes: config.server.maxBodyBytes, logger: logger)
        let dispatcher: Dispatcher?
        if receivers.isEmpty || client == nil {
            // Nothing can be sent; only end what a former config left pending.
            if postgres == nil { try await outbox.killOrphans(known: [], now: .now()) }
            dispatcher = nil
        } else {
            var settings = Dispatcher.Settings()
            settings.publicURL = config.server.publicURL
            settings.endOrphans = postgres == nil
            settings.routesGroupingEverything = Dispatcher.Settings.routesGroupingEverything(in: routes)
            for r in config.receivers {
                if let maxAge = r.maxAge { settings.maxAge[r.name] = maxAge }
                if let timeout = r.timeout { settings.timeout[r.name] = timeout }
            }
            settings.gateNotice = { [desk, outbox] gateID, receiver, type in
                await desk.notice(gateID: gateID, receiver: receiver, eventType: type, outbox: outbox)
            }
            settings.gateNotified = { [gates] gateID, receiver, type, outcome, messageID in
                var detail = JSONObject([("receiver", .string(receiver)), ("event", .string(type)), ("outcome", .string(outcome))])
                if let messageID { detail.append("message_id", .string(messageID)) }
                try? await gates.auditNotification(gateID: gateID, action: "notified", detail: detail)
            }
            dispatcher = Dispatcher(
                outbox: outbox, receivers: receivers, client: client!, bus: bus, silences: SQLSilenceStore(database: database),
                inhibitor: Inhibitor(rules: config.inhibitRules), settings: settings, logger: logger, ownership: ownership)
            // What a commit creates goes to the dispatcher from memory, not read back (not where
            // replicas claim rows as they read them).
            if ownership.claimant == nil {
                log.handDeliveries { [weak dispatcher] rows, lastCursor, now in
                    dispatcher?.takeCommitted(rows, lastCursor: lastCursor, now: now) ?? false
                }
            }
        }
        let datasets = DatasetService(repository: SQLDatasetRepository(log: log), bus: bus, pageURL: { [base = desk.base] in "\(base.value)/annotate/\($0)" })
        // The router and the fast path of POST /v1/events share these: one token cache, one writer.
        let auth = Authenticator(tokens: SQLTokenStore(database: database), signer: desk.signer)
        let events = EventService(
            store: log, intake: EventIntake(maxItems: config.server.maxBatchItems), gateRules: config.gateRules, gates: desk.gates,
            labellingRules: config.labellingRules, datasets: datasets)
        let router = makeRouter(
            config: config, database: database, log: log, outbox: outbox, registry: registry, state: state, desk: desk, callbacks: callbacks,
            pages: templates, datasets: datasets, events: events, auth: auth,
            receiverHealth: { dispatcher?.receiverHealth() ?? [] })
        let fastPath = ProcessInfo.processInfo.environment["GATEHOUSE_EVENTS_FAST_PATH"] == "off"
            ? nil : EventsFastPath.Settings(events: events, auth: auth, maxBodyBytes: config.server.maxBodyBytes, logger: logger)
        let app = Application(
            router: router,
            // The idle timeout is Hummingbird's connection state handler: it closes a
            // connection that sent nothing for that long while its request is being read, or
            // while it sits idle between requests, and never one whose answer is being written.
            server: .gatehouse(
                configuration: .init(
                    additionalChannelHandlers: [EarlyAnswerHandler(), CloseAfterResponseHandler()],
                    idleTimeout: .milliseconds(config.server.idleTimeout.milliseconds)),
                fastPath: fastPath),
            configuration: .init(
                address: .hostname(address.host, port: address.port), serverName: nil,
                availableConnectionsDelegate: MaximumAvailableConnections(config.server.maxConnections, logger: logger)),
            onServerRunning: { channel in
                let bound = channel.localAddress.flatMap { $0.port }.map { "\(address.host.contains(":") ? "[\(address.host)]" : address.host):\($0)" } ?? "\(address)"
                // The first stdout line is the contract with scripts and tests that start `serve`
                // on port 0 and need to know where it landed.
                FileHandle.standardOutput.write(Data("gatehouse listening on http://\(bound)\n".utf8))
                // Without server.public_url, links point at the address actually bound (port 0 included).
                if config.server.publicURL == nil { baseURL.set("http://\(bound)") }
                logger.info("listening", metadata: ["address": .string(bound), "db": .string(database.location), "durability": .string(config.storage.durability.rawValue)])
            },
            logger: logger
        )
        var background: [any Service] = []
        if let bridge { background.append(BackgroundLoop { await bridge.run() }) }
        if let ownership = ownership as? PostgresOwnership { background.append(BackgroundLoop { await ownership.run() }) }
        if let dispatcher, let ownership = ownership as? PostgresOwnership {
            ownership.handOver { [weak dispatcher] name in dispatcher?.isSteady(receiver: name) ?? true }
        }
        if let dispatcher, let client {
            background.append(DispatcherService(dispatcher: dispatcher, client: client, state: state, shutdownTimeout: config.server.shutdownTimeout))
        }
        background.append(GateScheduler(store: gates, bus: bus, logger: logger, ownership: ownership))
        background.append(HeapReturn())
        return GatehouseApp(
            application: app, router: router, background: background, state: state, database: database, dispatcher: dispatcher,
            shutdownTimeout: config.server.shutdownTimeout, logger: logger)
    }
}

/// What the composition root built: the HTTP application and the services running beside it.
public struct GatehouseApp {
    public let application: Application<RouterResponder<GatehouseContext>>
    /// The routes, for tests that check them against docs/openapi.yaml.
    public let router: Router<GatehouseContext>
    /// The dispatcher (when receivers exist) and the gate timers, in start order.
    let background: [any Service]
    let state: ServerState
    public let database: any StoreDatabase
    public let dispatcher: Dispatcher?
    let shutdownTimeout: GatehouseDuration
    let logger: Logger

    /// Runs until SIGINT/SIGTERM. ServiceLifecycle shuts services down in reverse order: first
    /// /readyz turns 503, then the HTTP server finishes its requests (waits and streams are
    /// answered at once), then the timers stop, and last the dispatcher, which abandons sends
    /// still in flight at the shutdown deadline (they stay due and go again after a restart).
    public func run() async throws {
        var services = background.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0, successTerminationBehavior: .ignore) }
        services.append(.init(service: application))
        let drainDelay = Duration.milliseconds(min(1000, shutdownTimeout.milliseconds / 4))
        services.append(.init(
            service: DrainFlag(state: state, delay: drainDelay, database: database, lockDeadline: .milliseconds(max(0, shutdownTimeout.milliseconds - 1000))),
            successTerminationBehavior: .ignore))
        var groupConfig = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfig.maximumGracefulShutdownDuration = .milliseconds(shutdownTimeout.milliseconds)
        groupConfig.maximumCancellationDuration = .seconds(2)
        try await ServiceGroup(configuration: groupConfig).run()
        logger.info("stopped")
    }

    /// The application with the dispatcher and gate timers attached as its own services: what
    /// HummingbirdTesting runs (`app.withServices.test(.live) { client in … }`).
    public var withServices: Application<RouterResponder<GatehouseContext>> {
        var app = application
        app.addServices(background)
        return app
    }
}

extension GatehouseServer {
    /// The signing secrets of Slack apps and the public keys of Discord applications among the
    /// receivers: what proves a button click came from them.
    static func callbackVerifiers(_ config: GatehouseConfig) throws -> (slack: [SlackSignature], discord: [DiscordSignature]) {
        var slack: [SlackSignature] = []
        var discord: [DiscordSignature] = []
        for r in config.receivers {
            switch Platforms.settings(of: r) {
            case .success(let settings as SlackSettings):
                if let secret = settings.signingSecret { slack.append(SlackSignature(secret: secret.value)) }
            case .success(let settings as DiscordSettings):
                if let hex = settings.publicKey {
                    guard let key = DiscordSignature(publicKeyHex: hex) else {
                        throw StartupError("receiver \(r.name): discord.public_key must be the application's 64-hex-digit Ed25519 public key")
                    }
                    discord.append(key)
                }
            case .success: break
            case .failure(let problems): throw StartupError("receiver \(r.name): \(problems.summary)")
            }
        }
        return (slack, discord)
    }

    /// The folders whose files override the embedded templates, in increasing precedence:
    /// `GATEHOUSE_TEMPLATES`, then the config's `templates:`.
    public static func templateOverrides(_ config: GatehouseConfig) -> [String] {
        var folders: [String] = []
        if let env = ProcessInfo.processInfo.environment["GATEHOUSE_TEMPLATES"], !env.isEmpty { folders.append(env) }
        if let dir = config.templatesDirectory { folders.append(dir) }
        return folders
    }

    /// The templates compiled into the binary, with the override folders' files taking
    /// precedence one file at a time.
    public static func loadTemplates(_ config: GatehouseConfig) throws -> TemplateSet {
        do {
            return try TemplateSet(overrides: templateOverrides(config))
        } catch {
            throw StartupError("cannot load the templates: \(error)")
        }
    }

    /// One `Receiver` per configured receiver, rendering the embedded templates (overridden by
    /// GATEHOUSE_TEMPLATES and the config's `templates:` directory).
    public static func makeReceivers(_ config: GatehouseConfig, templates: TemplateSet? = nil) async throws -> [String: any Receiver] {
        guard !config.receivers.isEmpty else { return [:] }
        let templates = try templates ?? loadTemplates(config)
        var receivers: [String: any Receiver] = [:]
        for r in config.receivers {
            do {
                receivers[r.name] = try Platforms.makeReceiver(r, templates: templates)
            } catch {
                throw StartupError("\(error)")
            }
        }
        return receivers
    }
}

extension GatehouseServer {
    /// Loads the effective templates (embedded + GATEHOUSE_TEMPLATES + the config's
    /// `templates:`), compiles every one and renders it — chat messages through the receivers
    /// with sample events, pages with an empty context — so a broken override is reported by
    /// `config check`, naming the template, not at 3 a.m.
    public static func checkTemplates(_ config: GatehouseConfig) async -> [ConfigIssue] {
        let templates: TemplateSet
        do {
            templates = try TemplateSet(overrides: templateOverrides(config))
        } catch {
            return [ConfigIssue(line: 0, message: "templates: \(error)")]
        }
        var issues: [ConfigIssue] = []
        for name in templates.templateNames where name.hasPrefix("pages/") {
            do {
                _ = try templates.renderHTML(name, [:])
            } catch {
                issues.append(ConfigIssue(line: 0, message: "templates: \(name): \(error)"))
            }
        }
        let event = Event(
            id: "check", type: "step.failed", pipeline: "train", run: "r1", step: "fit", summary: "sample <summary> & \"quotes\"",
            details: "line 1\nline 2", labels: [("team", "ml")], url: "https://example.org/r1", time: .now())
        let message = OutboundMessage(kind: .event, deliveryID: "msg_check", receiver: "check", groupKey: "root|", events: [StoredEvent(cursor: 1, event: event, receivedAt: .now())], publicURL: config.server.publicURL)
        // Render through the receivers themselves, so the check exercises what delivery runs.
        let url = Secret("https://example.invalid/hook")
        var receivers: [any Receiver] = [
            SlackReceiver(name: "check", webhookURL: url, templates: templates, buttons: true),
            DiscordReceiver(name: "check", webhookURL: url, templates: templates, buttons: true),
            MattermostReceiver(name: "check", webhookURL: url, templates: templates, buttons: true),
        ]
        if let webhook = try? WebhookReceiver(name: "check", url: url, secret: nil, templates: templates) { receivers.append(webhook) }
        var second = event
        second.id = "check-2"
        second.type = "run.failed"
        let digest = OutboundMessage(
            kind: .digest, deliveryID: "msg_check", receiver: "check", groupKey: "root|",
            events: message.events + [StoredEvent(cursor: 2, event: second, receivedAt: .now())], publicURL: config.server.publicURL)
        var resolved = message
        resolved.kind = .resolved
        var gateOpen = message
        gateOpen.gate = GateNotice.sample(open: true)
        var gateClosed = message
        gateClosed.gate = GateNotice.sample(open: false)
        for receiver in receivers {
            for sample in [message, digest, resolved, gateOpen, gateClosed] {
                do {
                    _ = try receiver.request(for: sample, now: .now())
                } catch {
                    issues.append(ConfigIssue(line: 0, message: "templates: \(error)"))
                }
            }
        }
        return issues
    }
}

/// Runs the dispatcher. On shutdown it stops claiming work and lets attempts in flight finish
/// until shortly before the shutdown deadline; what is still in flight then is abandoned and
/// stays due in the database (sent again after the restart, same webhook-id). A receiver that
/// never answers must not turn a clean stop into a crash.
struct DispatcherService: Service {
    let dispatcher: Dispatcher
    let client: CurlMultiClient
    let state: ServerState
    let shutdownTimeout: GatehouseDuration

    func run() async throws {
        let client = client
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await dispatcher.run()
            } onGracefulShutdown: { [state, shutdownTimeout] in
                dispatcher.stop()
                let started = state.drainingSince ?? .now
                let deadline = started + .milliseconds(max(0, shutdownTimeout.milliseconds - 500))
                Task {
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    client.shutdown()
                }
            }
        } onCancel: {
            client.shutdown()
        }
        client.shutdown()
    }
}

/// Flips `/readyz` to 503 as soon as shutdown begins, so load balancers stop sending work
/// while in-flight requests finish; and a second before the shutdown deadline ends every
/// wait for another process's database lock, so requests stuck behind it are answered `503`
/// and the shutdown ends in time (it crashed when they held it past its budget).
struct DrainFlag: Service {
    let state: ServerState
    /// How long the server keeps answering (with `/readyz` at 503) before it stops accepting:
    /// long enough for a load balancer's probe to see it, short against the shutdown budget.
    let delay: Duration
    let database: any StoreDatabase
    /// From the start of shutdown, when lock waits end.
    let lockDeadline: Duration

    func run() async throws {
        try? await gracefulShutdown()
        state.startDraining()
        let database = database
        let deadline = ContinuousClock.now + lockDeadline
        // Not awaited: the services after this one shut down meanwhile.
        Task {
            try? await Task.sleep(until: deadline, clock: .continuous)
            database.stopWaitingForLocks()
        }
        try? await Task.sleep(for: delay)
    }
}
