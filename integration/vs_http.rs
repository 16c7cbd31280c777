//! VirtualService HTTP features through a real Envoy (faults, timeouts, retries, mirroring,
//! rewrites, headers, CORS).
