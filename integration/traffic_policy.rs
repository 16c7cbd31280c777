//! DestinationRule traffic policies through a real Envoy (load balancing, connection pools,
//! circuit breaking, outlier detection, timeouts).
