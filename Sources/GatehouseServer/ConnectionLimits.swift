import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Ends a connection cleanly after a response that says `Connection: close` — the answer to a
/// request whose body was refused unread (`413`). Hummingbird would otherwise keep reading
/// the refused body to find the next request, however long it is.
///
/// The close is a half-close first: the response is flushed, then our side sends FIN, and the
/// rest of the refused body is still read and discarded (up to `drainLimit`). Closing both
/// ways at once with unread bytes in the socket makes the kernel send a reset, which can
/// destroy the `413` before the client has read it.
final class CloseAfterResponseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How much of a refused body is read after the answer before the connection is cut.
    static let drainLimit = 1 << 20

    private var closeAfterEnd = false
    private var outputClosed = false
    private var drained = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.headerFields[.connection]?.lowercased() == "close" { closeAfterEnd = true }
            context.write(data, promise: promise)
        case .end where closeAfterEnd:
            closeAfterEnd = false
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            context.writeAndFlush(data, promise: written)
            outputClosed = true
            context.close(mode: .output, promise: nil)
        default:
            context.write(data, promise: promise)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard outputClosed else { return context.fireChannelRead(data) }
        // Nothing more will be answered: discard what the client still sends, and close once
        // its body ends or it sent too much.
        switch unwrapInboundIn(data) {
        case .head: context.close(promise: nil)
        case .body(let buffer):
            drained += buffer.readableBytes
            if drained > Self.drainLimit { context.close(promise: nil) }
        case .end: context.close(promise: nil)
        }
    }
}
