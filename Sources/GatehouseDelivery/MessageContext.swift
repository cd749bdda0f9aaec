import Foundation
import GatehouseCore

/// The values templates see, escaped for one platform and cut to its limits. Truncation keeps
/// the start of the text and says where the rest is: a message is never dropped for its size.
public struct MessageContext {
    public struct Limits: Sendable {
        public var title: Int
        public var summary: Int
        public var details: Int
        public init(title: Int, summary: Int, details: Int) {
            self.title = title
            self.summary = summary
            self.details = details
        }
    }

    public static func build(for message: OutboundMessage, limits: Limits, buttons: Bool = false, escape: (String) -> String, link: (String, String) -> String) -> [String: Any] {
        let event = message.events.last?.event
        let runURL = message.publicURL.flatMap { base in event?.run.map { "\(base)/v1/runs/\(percent($0))?pipeline=\(percent(event!.pipeline))" } }
        let moreURL = event?.url ?? runURL
        func cut(_ text: String, _ max: Int) -> String {
            guard text.count > max else { return text }
            let marker = moreURL.map { " … (truncated, " + link($0, "full text") + ")" } ?? " … (truncated)"
            let keep = Swift.max(0, max - marker.count - 16)
            return escape(String(text.prefix(keep))) + marker
        }
        var context: [String: Any] = [
            "kind": message.kind.rawValue,
            "delivery_id": message.deliveryID,
            "receiver": message.receiver,
            "count": message.events.count,
            "buttons": buttons,
        ]
        if let event {
            var title = "\(event.type) · \(event.pipeline)"
            if let run = event.run { title += "/\(run)" }
            if let step = event.step { title += "/\(step)" }
            context["title"] = title.count > limits.title ? escape(String(title.prefix(limits.title - 1))) + "…" : escape(title)
            context["type"] = escape(event.type)
            context["pipeline"] = escape(event.pipeline)
            // Absent values stay absent: Mustache would print an Optional's "nil".
            if let run = event.run { context["run"] = escape(run) }
            if let step = event.step { context["step"] = escape(step) }
            context["severity"] = event.severity.rawValue
            context["severity_emoji"] = ["info": "ℹ️", "warning": "⚠️", "error": "🔴", "critical": "🚨"][event.severity.rawValue]
            context["color_hex"] = ["info": "#439FE0", "warning": "#FFA500", "error": "#E74C3C", "critical": "#8B0000"][event.severity.rawValue]
            context["color_int"] = ["info": 4431840, "warning": 16753920, "error": 15158332, "critical": 9109504][event.severity.rawValue]
            context["time"] = event.time.rfc3339
            if let summary = event.summary { context["summary"] = summary.count > limits.summary ? cut(summary, limits.summary) : escape(summary) }
            if let details = event.details { context["details"] = details.count > limits.details ? cut(details, limits.details) : escape(details) }
            let description = [context["summary"] as? String, context["details"] as? String].compactMap { $0 }.joined(separator: "\n\n")
            if !description.isEmpty { context["description"] = description }
            if let url = event.url {
                context["url"] = url
                // An event's url is the orchestrator's page — except Gatehouse's own dataset
                // events, whose link is the labelling page.
                context["url_label"] = event.type.hasPrefix("dataset.") ? "open labelling page" : "open in orchestrator"
            }
            if let runURL { context["run_url"] = runURL }
            context["labels"] = event.labels.map { ["name": escape($0.key), "value": escape($0.value)] }
            context["has_labels"] = !event.labels.isEmpty
            context["event_id"] = event.id
            if let last = message.events.last { context["cursor"] = String(last.cursor) }
        }
        if let gate = message.gate { addGate(gate, to: &context, limits: limits, escape: escape) }
        if message.events.count > 1 { addDigest(to: &context, message: message, limits: limits, escape: escape, link: link) }
        if message.kind == .repeat, let title = context["title"] as? String {
            context["title"] = escape("Still failing: ") + title
        }
        if message.kind == .resolved, let event {
            // The pipeline that was failing ran successfully: say it recovered.
            context["title"] = escape("\(event.pipeline) recovered" + (event.run.map { ": run \($0) succeeded" } ?? ""))
            context["severity_emoji"] = "✅"
            context["color_hex"] = "#2EB67D"
            context["color_int"] = 3061373
        }
        return context
    }

    /// A gate message: the question, who may decide, the deadline, one signed link per
    /// choice, and (`buttons`) the values native buttons need.
    static func addGate(_ gate: GateNotice, to context: inout [String: Any], limits: Limits, escape: (String) -> String) {
        func cut(_ text: String, _ max: Int) -> String { text.count > max ? String(text.prefix(max - 1)) + "…" : text }
        context["gate_id"] = gate.id
        context["gate_state"] = gate.state
        context["gate_title"] = escape(cut(gate.title, limits.title))
        context["gate_headline"] = escape(gate.headline)
        // Details are cut before escaping, with the page (which shows them whole) a click away.
        if let details = gate.details { context["gate_details"] = escape(details.count > limits.details ? String(details.prefix(limits.details - 60)) + " … (truncated; full text on the decision page)" : details) }
        context["gate_approvers"] = escape(cut(gate.approvers, 500))
        context["gate_approvals"] = gate.approvals
        if let deadline = gate.deadline { context["gate_deadline"] = deadline }
        if let outcome = gate.outcome { context["gate_outcome"] = escape(cut(outcome, 500)) }
        context["gate_url"] = gate.pageURL
        context["gate_open"] = gate.isOpen
        context["gate_buttons"] = gate.isOpen && context["buttons"] as? Bool == true
        context["gate_callback_url"] = gate.mattermostCallbackURL
        context["gate_json"] = gate.json.serialized()
        context["gate_color_hex"] = gate.isOpen ? "#FF8000" : (gate.state == "approved" ? "#2EB67D" : "#E74C3C")
        context["gate_color_int"] = gate.isOpen ? 16744448 : (gate.state == "approved" ? 3061373 : 15158332)
        context["gate_choices"] = gate.choices.enumerated().map { i, c -> [String: Any] in
            var choice: [String: Any] = [
                "name": c.name, "label": escape(c.label), "url": c.url, "token": c.contextToken, "first": i == 0,
                "mm_id": "gate" + c.name.filter { $0.isLetter || $0.isNumber } + String(i),
                "discord_style": c.style == "primary" ? 3 : c.style == "danger" ? 4 : 2,
                "mm_style": c.style == "primary" ? "success" : c.style == "danger" ? "danger" : "default",
            ]
            if c.style == "primary" || c.style == "danger" { choice["slack_style"] = c.style }
            return choice
        }
        context["title"] = escape(cut("\(gate.headline): \(gate.title)", limits.title))
    }

    /// A digest: a headline for the group and one line per event, cut to the platform's limit
    /// with a count of what did not fit.
    static func addDigest(to context: inout [String: Any], message: OutboundMessage, limits: Limits, escape: (String) -> String, link: (String, String) -> String) {
        let events = message.events.map(\.event)
        let first = events[0]
        let pipelines = Set(events.map(\.pipeline))
        let runs = Set(events.compactMap(\.run))
        var scope = pipelines.count == 1 ? first.pipeline : "\(pipelines.count) pipelines"
        if runs.count == 1, let run = runs.first { scope += "/\(run)" }
        let worst = events.map(\.severity).max() ?? .info
        context["title"] = escape("\(events.count) events · \(scope)")
        context["severity"] = worst.rawValue
        context["severity_emoji"] = ["info": "ℹ️", "warning": "⚠️", "error": "🔴", "critical": "🚨"][worst.rawValue]
        context["color_hex"] = ["info": "#439FE0", "warning": "#FFA500", "error": "#E74C3C", "critical": "#8B0000"][worst.rawValue]
        context["color_int"] = ["info": 4431840, "warning": 16753920, "error": 15158332, "critical": 9109504][worst.rawValue]
        context["summary"] = nil
        context["details"] = nil
        context["description"] = nil
        var lines: [String] = []
        var used = 0
        for (i, event) in events.enumerated() {
            var line = "• " + escape(event.type)
            if let run = event.run, runs.count > 1 { line += " " + escape(run) }
            if let step = event.step { line += " " + escape(step) }
            if let summary = event.summary { line += ": " + escape(summary.count > 200 ? String(summary.prefix(199)) + "…" : summary) }
            if let url = event.url { line += " (" + link(url, "open") + ")" }
            let more = "\n… and \(events.count - i) more"
            if used + line.count + 1 + more.count > limits.details {
                lines.append("… and \(events.count - i) more")
                break
            }
            lines.append(line)
            used += line.count + 1
        }
        context["digest"] = lines.joined(separator: "\n")
    }

    static func percent(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+?#/"))) ?? s
    }
}
