// Preloaded into the suite's origin server: it calls listen(port), which would bind every interface.
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  return typeof port === 'number' || typeof port === 'string' ? listen.call(this, port, '127.0.0.1', ...rest) : listen.call(this, port, ...rest)
}
