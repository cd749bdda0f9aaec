import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseSignatures
import Yams

/// Reads `gatehouse.yml` into a `GatehouseConfig`, collecting every problem with its line
/// instead of stopping at the first, so `gatehouse config check` can list them all.
public struct ConfigLoader {
    public var environment: [String: String]

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    public struct Loaded {
        public var config: GatehouseConfig
        public var issues: [ConfigIssue]
    }

    public func load(file path: String) -> Loaded {
        guard let data = FileManager.default.contents(atPath: path) else {
            return Loaded(config: GatehouseConfig(), issues: [ConfigIssue(line: 0, message: "cannot read config file \(path)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            return Loaded(config: GatehouseConfig(), issues: [ConfigIssue(line: 0, message: "config file \(path) is not UTF-8")])
        }
        return load(yaml: text)
    }

    public func load(yaml text: String) -> Loaded {
        var walker = Walker(environment: environment)
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            return Loaded(config: GatehouseConfig(), issues: [ConfigIssue(line: Self.line(of: error), message: "invalid YAML: \(Self.describe(error))")])
        } catch {
            return Loaded(config: GatehouseConfig(), issues: [ConfigIssue(line: 0, message: "invalid YAML: \(error)")])
        }
        // YAML aliases are references: a few hundred bytes of anchors ten deep name millions of
        // routes, and walking them took a minute and 5 GB (a hostile tester's file). Counted
        // with a stop before anything walks the tree.
        if let node, Self.expandedSize(node, upTo: Self.maxNodes) > Self.maxNodes {
            return Loaded(config: GatehouseConfig(), issues: [ConfigIssue(
                line: 0, message: "the configuration expands to more than \(Self.maxNodes) YAML nodes (its aliases repeat what they name): write it out, or use fewer aliases")])
        }
        if let node { walker.root(node) }
        walker.crossCheck()
        // By line, then text: issues found while walking a mapping come in its (per-instance) order.
        return Loaded(config: walker.config, issues: walker.issues.sorted { ($0.line, $0.message) < ($1.line, $1.message) })
    }

    /// Far above any real configuration (thousands of nodes), far below a slow one.
    static let maxNodes = 200_000

    /// Nodes in `node` with every alias expanded, counting stopped once past `limit`.
    static func expandedSize(_ node: Node, upTo limit: Int) -> Int {
        var count = 0
        var stack = [node]
        while let next = stack.popLast() {
            count += 1
            if count > limit { return count }
            switch next {
            case .scalar: break
            case .sequence(let sequence): stack.append(contentsOf: sequence)
            case .mapping(let mapping):
                for (key, value) in mapping {
                    stack.append(key)
                    stack.append(value)
                }
            case .alias: break  // compose puts the named node in its place: it is counted there
            }
        }
        return count
    }

    static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        // Not the line of a duplicated key: Yams picks which duplicate it names at random.
        default: return 0
        }
    }

    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): return problem
        // Yams lists the keys in a set's (random) order: sorted, the message is the same every
        // time (found by Fuzz/fuzz-config).
        case .duplicatedKeysInMapping(let duplicates, _):
            return "a key appears twice in one mapping: " + duplicates.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        default: return "\(error)"
        }
    }
}

private struct Walker {
    var environment: [String: String]
    var config = GatehouseConfig()
    var issues: [ConfigIssue] = []
    /// Receiver names referenced by routes, with the line of the reference.
    var receiverReferences: [(name: String, line: Int, field: String)] = []

    init(environment: [String: String]) { self.environment = environment }

    mutating func issue(_ node: Node?, _ message: String) { issues.append(ConfigIssue(line: node?.mark?.line ?? 0, message: message)) }

    /// The mapping's entries, reporting keys that are not in `known` (with a close match when
    /// there is one, because most unknown keys are typos).
    mutating func entries(_ node: Node, _ section: String, known: [String]) -> [(key: String, keyNode: Node, value: Node)] {
        guard case .mapping(let mapping) = node else {
            issue(node, "\(section) must be a mapping")
            return []
        }
        var result: [(String, Node, Node)] = []
        var seen = Set<String>()
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { issue(keyNode, "\(section): keys must be strings"); continue }
            // `foo_file: /path` stands for `foo: <contents of /path>`.
            let base = key.hasSuffix("_file") ? String(key.dropLast(5)) : key
            guard known.contains(key) || (key.hasSuffix("_file") && known.contains(base)) else {
                let hint = known.min(by: { editDistance($0, key) < editDistance($1, key) }).flatMap { editDistance($0, key) <= 2 ? " (did you mean \($0)?)" : nil } ?? ""
                issue(keyNode, "unknown key \"\(key)\" in \(section)\(hint)")
                continue
            }
            if seen.contains(base) { issue(keyNode, "\(section): \(base) is given twice"); continue }
            seen.insert(base)
            result.append((key, keyNode, value))
        }
        return result
    }

    /// A scalar string with `${VAR}` expanded, or the contents of a `*_file`.
    mutating func string(_ key: String, _ node: Node, _ section: String) -> String? {
        guard case .scalar(let scalar) = node else { issue(node, "\(section).\(key) must be a single value"); return nil }
        guard let expanded = expand(scalar.string, node, "\(section).\(key)") else { return nil }
        if key.hasSuffix("_file") {
            guard let data = FileManager.default.contents(atPath: expanded), let text = String(data: data, encoding: .utf8) else {
                issue(node, "\(section).\(key): cannot read file \(expanded)")
                return nil
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return expanded
    }

    mutating func expand(_ text: String, _ node: Node, _ what: String) -> String? {
        guard text.contains("${") else { return text }
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                issue(node, "\(what): unterminated ${ in value")
                return nil
            }
            let name = String(rest[start.upperBound..<end])
            guard let value = environment[name] else {
                issue(node, "\(what): environment variable \(name) is not set")
                return nil
            }
            out += value
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    mutating func duration(_ key: String, _ node: Node, _ section: String) -> GatehouseDuration? {
        guard let text = string(key, node, section) else { return nil }
        guard let d = GatehouseDuration(text) else {
            issue(node, "\(section).\(key): bad duration \"\(text)\" (use forms like 30s, 5m, 4h, 1h30m; at most 100y)")
            return nil
        }
        return d
    }

    mutating func bool(_ key: String, _ node: Node, _ section: String) -> Bool? {
        guard let text = string(key, node, section) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: issue(node, "\(section).\(key) must be true or false"); return nil
        }
    }

    mutating func int(_ key: String, _ node: Node, _ section: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(key, node, section) else { return nil }
        guard let v = Int(text), range.contains(v) else {
            issue(node, "\(section).\(key) must be an integer in \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func size(_ key: String, _ node: Node, _ section: String) -> Int? {
        guard let text = string(key, node, section) else { return nil }
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1)]
        let trimmed = text.replacingOccurrences(of: " ", with: "")
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            if let n = Int(trimmed.dropLast(suffix.count)), n > 0, case let (bytes, overflow) = n.multipliedReportingOverflow(by: factor), !overflow {
                return bytes
            }
        }
        if let n = Int(trimmed), n > 0 { return n }
        issue(node, "\(section).\(key): bad size \"\(text)\" (use bytes or forms like 512KiB, 1MiB)")
        return nil
    }

    mutating func stringList(_ key: String, _ node: Node, _ section: String) -> [(String, Node)] {
        guard case .sequence(let sequence) = node else {
            issue(node, "\(section).\(key) must be a list")
            return []
        }
        var out: [(String, Node)] = []
        for item in sequence {
            if let s = string(key, item, section) { out.append((s, item)) }
        }
        return out
    }

    mutating func matchers(_ key: String, _ node: Node, _ section: String) -> [Matcher] {
        var result: [Matcher] = []
        for (text, itemNode) in stringList(key, node, section) {
            do { result.append(contentsOf: try Matcher.parseList(text)) } catch {
                issue(itemNode, "\(section).\(key): bad matcher '\(text)': \(error.message)")
            }
        }
        return result
    }

    mutating func root(_ node: Node) {
        for (key, _, value) in entries(node, "the config", known: ["server", "storage", "log", "receivers", "route", "inhibit_rules", "gates", "labelling", "templates"]) {
            switch key {
            case "server": server(value)
            case "storage": storage(value)
            case "log": log(value)
            case "receivers": receivers(value)
            case "route": config.route = route(value, path: "route", isRoot: true)
            case "inhibit_rules": inhibitRules(value)
            case "gates": gateRules(value)
            case "labelling": labellingRules(value)
            case "templates":
                if let dir = string(key, value, "the config") {
                    var isDirectory: ObjCBool = false
                    if !FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory) || !isDirectory.boolValue {
                        issue(value, "templates: directory \(dir) does not exist")
                    }
                    config.templatesDirectory = dir
                }
            default: break
            }
        }
    }

    mutating func server(_ node: Node) {
        for (key, _, value) in entries(node, "server", known: ["address", "public_url", "max_body", "max_import", "max_batch", "sse_heartbeat", "shutdown_timeout", "idle_timeout", "max_connections"]) {
            switch key {
            case "address":
                if let address = string(key, value, "server") {
                    if ServerAddress(address) == nil { issue(value, "server.address: \"\(address)\" is not HOST:PORT") } else { config.server.address = address }
                }
            case "public_url", "public_url_file":
                if let url = string(key, value, "server") {
                    if EventValidator.isHTTPURL(url) { config.server.publicURL = url } else { issue(value, "server.public_url must be an http(s) URL") }
                }
            case "max_body": if let v = size(key, value, "server") { config.server.maxBodyBytes = v }
            case "max_import": if let v = size(key, value, "server") { config.server.maxImportBytes = v }
            case "max_batch": if let v = int(key, value, "server", range: 1...100_000) { config.server.maxBatchItems = v }
            case "sse_heartbeat": if let v = duration(key, value, "server") { config.server.sseHeartbeat = v }
            case "shutdown_timeout": if let v = duration(key, value, "server") { config.server.shutdownTimeout = v }
            case "idle_timeout":
                if let v = duration(key, value, "server") {
                    if v.milliseconds > 0 { config.server.idleTimeout = v } else { issue(value, "server.idle_timeout must be longer than 0s") }
                }
            case "max_connections": if let v = int(key, value, "server", range: 1...1_000_000) { config.server.maxConnections = v }
            default: break
            }
        }
    }

    mutating func storage(_ node: Node) {
        for (key, _, value) in entries(node, "storage", known: ["sqlite", "postgres", "durability"]) {
            switch key {
            case "sqlite": if let v = string(key, value, "storage") { config.storage.sqlite = v }
            case "postgres":
                if let v = string(key, value, "storage") {
                    if v.hasPrefix("postgres://") || v.hasPrefix("postgresql://") { config.storage.postgres = v } else {
                        issue(value, "storage.postgres must be a postgres://user:password@host:port/database URL")
                    }
                }
            case "durability":
                if let v = string(key, value, "storage") {
                    if let d = Durability(rawValue: v) { config.storage.durability = d } else { issue(value, "storage.durability must be full or normal") }
                }
            default: break
            }
        }
    }

    mutating func log(_ node: Node) {
        for (key, _, value) in entries(node, "log", known: ["level", "format"]) {
            guard let v = string(key, value, "log") else { continue }
            if key == "level" {
                if ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(v) { config.log.level = v } else { issue(value, "log.level must be one of trace, debug, info, notice, warning, error, critical") }
            } else {
                if ["json", "text"].contains(v) { config.log.format = v } else { issue(value, "log.format must be json or text") }
            }
        }
    }

    /// A receiver's platform block, checked against the platform's own settings type (its
    /// folder in GatehouseDelivery says which keys exist and what a valid value is); each
    /// problem is reported at the line of its key. Nil when the block cannot be read at all.
    mutating func platformSettings(_ kind: GatehouseConfig.ReceiverKind, _ node: Node, receiver name: String?) -> [String: Secret]? {
        guard case .mapping(let mapping) = node else {
            issue(node, "receiver \(kind.rawValue) must be a mapping")
            return nil
        }
        var settings: [String: Secret] = [:]
        var lines: [String: Node] = [:]
        var readable = true
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { issue(keyNode, "receiver \(kind.rawValue): keys must be strings"); continue }
            // `foo_file: /path` stands for `foo: <contents of /path>`.
            let base = key.hasSuffix("_file") ? String(key.dropLast(5)) : key
            if lines[base] != nil { issue(keyNode, "receiver \(kind.rawValue): \(base) is given twice"); continue }
            lines[base] = keyNode
            if let text = string(key, value, kind.rawValue) { settings[base] = Secret(text) } else { readable = false }
        }
        let receiver = GatehouseConfig.Receiver(name: name ?? "?", kind: kind, settings: settings, line: node.mark?.line ?? 0)
        // A value that could not be read was reported already; checking without it would
        // only add "is required".
        if readable, case .failure(let problems) = Platforms.settings(of: receiver) {
            for problem in problems.all {
                issue(problem.key.flatMap { lines[$0] } ?? node, problem.unknownKey ? problem.message : "receiver \(name ?? "?"): \(problem.message)")
            }
        }
        return settings
    }

    mutating func receivers(_ node: Node) {
        guard case .sequence(let sequence) = node else { issue(node, "receivers must be a list"); return }
        for item in sequence {
            var name: String?
            var maxAge: GatehouseDuration?
            var sendResolved = false
            var timeout: GatehouseDuration?
            var kinds: [(GatehouseConfig.ReceiverKind, [String: Secret], Node)] = []
            for (key, _, value) in entries(item, "receiver", known: ["name", "max_age", "send_resolved", "timeout"] + GatehouseConfig.ReceiverKind.allCases.map(\.rawValue)) {
                if key == "name" { name = string(key, value, "receiver"); continue }
                if key == "max_age" {
                    maxAge = duration(key, value, "receiver")
                    // Nothing would ever be sent: every delivery would be too old at its first try.
                    if let given = maxAge, given.milliseconds <= 0 { issue(value, "receiver.max_age must be more than 0s (every delivery would die unsent)") }
                    continue
                }
                if key == "send_resolved" { sendResolved = bool(key, value, "receiver") ?? false; continue }
                if key == "timeout" { timeout = duration(key, value, "receiver"); continue }
                guard let kind = GatehouseConfig.ReceiverKind(rawValue: key) else { continue }
                if let settings = platformSettings(kind, value, receiver: name) { kinds.append((kind, settings, value)) }
            }
            guard let name, !name.isEmpty else { issue(item, "receiver without a name"); continue }
            if config.receivers.contains(where: { $0.name == name }) { issue(item, "receiver \"\(name)\" is defined twice"); continue }
            guard kinds.count == 1 else {
                issue(item, kinds.isEmpty ? "receiver \"\(name)\" names no platform (slack, discord, mattermost or webhook)" : "receiver \"\(name)\" names more than one platform; use one receiver each")
                continue
            }
            var receiver = GatehouseConfig.Receiver(name: name, kind: kinds[0].0, settings: kinds[0].1, maxAge: maxAge, line: item.mark?.line ?? 0)
            receiver.sendResolved = sendResolved
            receiver.timeout = timeout
            config.receivers.append(receiver)
        }
    }

    mutating func route(_ node: Node, path: String, isRoot: Bool) -> GatehouseConfig.Route {
        var route = GatehouseConfig.Route()
        route.line = node.mark?.line ?? 0
        for (key, _, value) in entries(node, path, known: ["receiver", "matchers", "group_by", "group_wait", "group_interval", "repeat_interval", "continue", "routes", "fallback"]) {
            switch key {
            case "receiver":
                if let v = string(key, value, path) { route.receiver = v; receiverReferences.append((v, value.mark?.line ?? 0, "\(path).receiver")) }
            case "fallback":
                if let v = string(key, value, path) { route.fallback = v; receiverReferences.append((v, value.mark?.line ?? 0, "\(path).fallback")) }
            case "matchers":
                route.matchers = matchers(key, value, path)
                if isRoot && !route.matchers.isEmpty { issue(value, "route: the root route matches every event and takes no matchers") }
            case "group_by":
                let names = stringList(key, value, path)
                for (name, n) in names where name != "..." && !EventValidator.isLabelName(name) { issue(n, "\(path).group_by: \"\(name)\" is not a field or label name") }
                route.groupBy = names.map(\.0)
            case "group_wait": route.groupWait = duration(key, value, path)
            case "group_interval": route.groupInterval = duration(key, value, path)
            case "repeat_interval": route.repeatInterval = duration(key, value, path)
            case "continue": route.continueMatching = bool(key, value, path) ?? false
            case "routes":
                guard case .sequence(let children) = value else { issue(value, "\(path).routes must be a list"); continue }
                for (i, child) in children.enumerated() { route.routes.append(self.route(child, path: "\(path).routes[\(i)]", isRoot: false)) }
            default: break
            }
        }
        if isRoot && route.receiver == nil { issue(node, "route: the root route needs a receiver (the default for events no child route takes)") }
        return route
    }

    mutating func inhibitRules(_ node: Node) {
        guard case .sequence(let sequence) = node else { issue(node, "inhibit_rules must be a list"); return }
        for (i, item) in sequence.enumerated() {
            var rule = GatehouseConfig.InhibitRule()
            let path = "inhibit_rules[\(i)]"
            for (key, _, value) in entries(item, path, known: ["source_matchers", "target_matchers", "equal"]) {
                switch key {
                case "source_matchers": rule.sourceMatchers = matchers(key, value, path)
                case "target_matchers": rule.targetMatchers = matchers(key, value, path)
                case "equal": rule.equal = stringList(key, value, path).map(\.0)
                default: break
                }
            }
            if rule.sourceMatchers.isEmpty || rule.targetMatchers.isEmpty { issue(item, "\(path) needs source_matchers and target_matchers") }
            config.inhibitRules.append(rule)
        }
    }

    /// `gates:` — each rule: a name, `match` (Alertmanager matchers) and the gate's fields,
    /// whose strings may be `{{path}}` templates over the event. Tags are checked here; what
    /// only the event can tell (a missing attribute) refuses that event with a 422.
    mutating func gateRules(_ node: Node) {
        guard case .sequence(let sequence) = node else { issue(node, "gates must be a list of rules"); return }
        for (i, item) in sequence.enumerated() {
            var name: String?
            var matchers: [Matcher] = []
            var template = JSONObject()
            let path = "gates[\(i)]"
            for (key, _, value) in entries(item, path, known: ["name", "match"] + GateSpec.fields) {
                switch key {
                case "name": name = string(key, value, path)
                case "match": matchers = self.matchers(key, value, path)
                default:
                    let json = Self.json(value)
                    checkTemplates(json, value, "\(path).\(key)")
                    template.append(key, json)
                }
            }
            guard let name, !name.isEmpty else { issue(item, "\(path) needs a name"); continue }
            if config.gateRules.contains(where: { $0.name == name }) { issue(item, "gates: rule \"\(name)\" is defined twice"); continue }
            if matchers.isEmpty { issue(item, "gates[\(name)] needs match: a rule without matchers would open a gate for every event") }
            if template["title"] == nil { issue(item, "gates[\(name)] needs a title") }
            // Fields without tags are the same for every event: checked now, as a gate opened by
            // the API would be, rather than refusing each matching event later (`timeout: 0s`,
            // `on_timeout: maybe`, bounds no value meets). Fields with tags wait for the event.
            let fixed = JSONObject(template.filter { !$0.value.serialized().contains("{{") }.map { ($0.key, $0.value) })
            var probe = fixed
            for (key, stand) in [("title", JSONValue.string("t")), ("pipeline", .string("p"))] where probe[key] == nil { probe.append(key, stand) }
            if case .failure(let problem) = GateSpec.parseNew(.object(probe)) {
                // A quorum is judged with the approvers and choices: only when they are fixed too.
                let templated = Set(template.keys).subtracting(fixed.keys)
                for error in problem.errors where fixed[Self.rootField(error.field)] != nil
                    && !(error.field == "required_approvals" && !templated.isDisjoint(with: ["approvers", "choices"])) {
                    issue(item, "gates[\(name)].\(error.field) \(error.detail)")
                }
            }
            config.gateRules.append(GateRule(name: name, matchers: matchers, template: template, line: item.mark?.line ?? 0))
        }
    }

    /// The top-level field an error names: `inputs` for `inputs[0].min`, `subject` for
    /// `subject.name`.
    static func rootField(_ field: String) -> String {
        String(field.prefix { $0 != "[" && $0 != "." })
    }

    /// `labelling:` — each rule: a name, `match`, the dataset (`dataset` is its name, with
    /// `task`, `labels`, `annotators_per_item`, `instructions`; strings may be templates) and
    /// `items`, where the event carries its items.
    mutating func labellingRules(_ node: Node) {
        guard case .sequence(let sequence) = node else { issue(node, "labelling must be a list of rules"); return }
        for (i, item) in sequence.enumerated() {
            var name: String?
            var matchers: [Matcher] = []
            var template = JSONObject()
            var items: String?
            let path = "labelling[\(i)]"
            for (key, _, value) in entries(item, path, known: ["name", "match", "dataset", "task", "labels", "annotators_per_item", "instructions", "items"]) {
                switch key {
                case "name": name = string(key, value, path)
                case "match": matchers = self.matchers(key, value, path)
                case "items": items = string(key, value, path)
                default:
                    let json = Self.json(value)
                    checkTemplates(json, value, "\(path).\(key)")
                    template.append(key == "dataset" ? "name" : key, json)
                }
            }
            guard let name, !name.isEmpty else { issue(item, "\(path) needs a name"); continue }
            if config.labellingRules.contains(where: { $0.name == name }) { issue(item, "labelling: rule \"\(name)\" is defined twice"); continue }
            if matchers.isEmpty { issue(item, "labelling[\(name)] needs match: a rule without matchers would take every event") }
            if template["name"] == nil { issue(item, "labelling[\(name)] needs dataset: the dataset's name (it may be a template)") }
            if template["labels"] == nil { issue(item, "labelling[\(name)] needs labels") }
            // Fixed fields are checked now, as `POST /v1/datasets` checks them, rather than
            // refusing each matching event later (`dataset: "bad name!"`, `labels: []`).
            let fixed = JSONObject(template.filter { !$0.value.serialized().contains("{{") }.map { ($0.key, $0.value) })
            var probe = fixed
            for (key, stand) in [("name", JSONValue.string("d")), ("labels", .array([.string("l")]))] where probe[key] == nil { probe.append(key, stand) }
            if case .failure(let problem) = DatasetSpec.parseNew(.object(probe)) {
                for error in problem.errors where fixed[Self.rootField(error.field)] != nil {
                    let field = error.field == "name" ? "dataset" : error.field
                    issue(item, "labelling[\(name)].\(field) \(error.detail)")
                }
            }
            guard let items, !items.isEmpty else { issue(item, "labelling[\(name)] needs items: where the event carries its items (for example attributes.items)"); continue }
            config.labellingRules.append(LabellingRule(name: name, matchers: matchers, template: template, items: items, line: item.mark?.line ?? 0))
        }
    }

    /// Reports bad tags (unclosed, sections) in every string of a rule's field.
    mutating func checkTemplates(_ value: JSONValue, _ node: Node, _ path: String) {
        switch value {
        case .string(let text):
            if case .failure(let error) = EventTemplate.tags(in: text) { issue(node, "\(path) \(error.detail)") }
        case .array(let items): for item in items { checkTemplates(item, node, path) }
        case .object(let object): for (_, v) in object { checkTemplates(v, node, path) }
        default: break
        }
    }

    /// A YAML value as JSON: plain scalars keep their YAML type (2 is a number, true a bool),
    /// quoted ones are strings.
    static func json(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            guard scalar.style == .plain else { return .string(scalar.string) }
            if let b = Bool.construct(from: scalar) { return .bool(b) }
            if let n = Int.construct(from: scalar) { return .int(n) }
            if let d = Double.construct(from: scalar), !scalar.string.lowercased().contains("inf"), !scalar.string.lowercased().contains("nan") { return .double(d) }
            if scalar.string == "~" || scalar.string == "null" || scalar.string.isEmpty { return .null }
            return .string(scalar.string)
        case .sequence(let sequence): return .array(sequence.map(json))
        case .mapping(let mapping):
            var o = JSONObject()
            for (k, v) in mapping { o.append(k.string ?? "", json(v)) }
            return .object(o)
        case .alias: return .null
        }
    }

    mutating func crossCheck() {
        let names = Set(config.receivers.map(\.name))
        for reference in receiverReferences where !names.contains(reference.name) {
            issues.append(ConfigIssue(line: reference.line, message: "\(reference.field) names unknown receiver \"\(reference.name)\"" + (names.isEmpty ? " (no receivers are defined)" : " (defined: \(names.sorted().joined(separator: ", ")))")))
        }
    }
}

/// `host:port`, `[v6]:port`.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        let host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let p = Int(port), (0...65535).contains(p) else { return nil }
        self.host = String(host)
        self.port = p
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Loopback: 127.0.0.0/8, ::1, localhost.
    public var isLoopback: Bool { host == "localhost" || host == "::1" || host.hasPrefix("127.") }
}
