import GatehouseCore

/// CloudEvents 1.0 over HTTP (CONTRACT §12), for `webhook` receivers with `format:
/// cloudevents` (structured mode) or `cloudevents-binary` (`ce-*` headers), so Argo Events,
/// Knative or Keptn can resume a pipeline on `gate.approved`. Each Gatehouse event is one
/// CloudEvent: `type` `dev.gatehouse.<event type>`, `source` the server's public URL,
/// `subject` the run, `id` the delivery id (stable across retries), `data` the event as the API
/// shows it. A digest is a batch (`application/cloudevents-batch+json`) in structured mode, and
/// one `dev.gatehouse.digest` event carrying the list in binary mode (which has no batches).
enum CloudEvents {
    /// Where events come from when the server has no `public_url`.
    static let defaultSource = "urn:gatehouse"

    /// The context attributes of the `index`-th event of `message`, in the order they are sent.
    static func attributes(_ stored: StoredEvent, index: Int, of message: OutboundMessage) -> [(String, String)] {
        let event = stored.event
        var attributes: [(String, String)] = [
            ("specversion", "1.0"),
            // One event: the delivery id itself (the receiver's idempotency key, as webhook-id).
            ("id", message.events.count == 1 ? message.deliveryID : "\(message.deliveryID).\(index)"),
            ("source", message.publicURL ?? defaultSource),
            ("type", "dev.gatehouse.\(event.type)"),
        ]
        if let run = event.run { attributes.append(("subject", run)) }
        attributes.append(("time", event.time.rfc3339))
        attributes.append(("datacontenttype", "application/json"))
        // Extension attributes (lower-case letters and digits only): why this was sent.
        attributes.append(("gatehousekind", message.gate != nil ? "gate" : message.kind.rawValue))
        attributes.append(("gatehousepipeline", event.pipeline))
        return attributes
    }

    /// Structured mode: the body and its media type.
    static func structured(_ message: OutboundMessage) -> (contentType: String, body: String) {
        func one(_ stored: StoredEvent, _ index: Int) -> JSONValue {
            var o = JSONObject()
            for (name, value) in attributes(stored, index: index, of: message) { o.append(name, .string(value)) }
            o.append("data", stored.json)
            return .object(o)
        }
        if message.events.count == 1 {
            return ("application/cloudevents+json", one(message.events[0], 0).serialized())
        }
        return ("application/cloudevents-batch+json", JSONValue.array(message.events.enumerated().map { one($1, $0) }).serialized())
    }

    /// Binary mode: the `ce-*` headers and the data as the body.
    static func binary(_ message: OutboundMessage) -> (headers: [(String, String)], body: String) {
        if message.events.count == 1 {
            let headers = attributes(message.events[0], index: 0, of: message).compactMap { name, value -> (String, String)? in
                name == "datacontenttype" ? nil : ("ce-\(name)", headerValue(value))
            }
            return ([("Content-Type", "application/json")] + headers, message.events[0].json.serialized())
        }
        let first = message.events[0].event
        var headers: [(String, String)] = [
            ("Content-Type", "application/json"), ("ce-specversion", "1.0"), ("ce-id", headerValue(message.deliveryID)),
            ("ce-source", headerValue(message.publicURL ?? defaultSource)), ("ce-type", "dev.gatehouse.digest"),
        ]
        if let run = first.run, message.events.allSatisfy({ $0.event.run == run }) { headers.append(("ce-subject", headerValue(run))) }
        headers.append(("ce-time", message.events.map(\.event.time).max()!.rfc3339))
        headers.append(("ce-gatehousekind", "digest"))
        headers.append(("ce-gatehousepipeline", headerValue(first.pipeline)))
        var data = JSONObject()
        data.append("group_key", .string(message.groupKey))
        data.append("events", .array(message.events.map(\.json)))
        return (headers, JSONValue.object(data).serialized())
    }

    /// The HTTP binding's header encoding: space, `"`, `%` and everything outside printable
    /// ASCII percent-encoded (UTF-8), so no value can break a header line.
    static func headerValue(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            if byte > 0x20, byte < 0x7F, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "%") {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
