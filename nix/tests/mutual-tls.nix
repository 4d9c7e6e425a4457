# services.babylon options of a host whose export ports serve mutual TLS, scraped by its
# local Prometheus with a client certificate: the fixture of the TLS tests in
# ./lib-test.nix, ./module-test.nix and tests/nix.rs (host paths, never read here).
{
  metrics.tls = {
    certFile = "/var/lib/acme/app/cert.pem";
    keyFile = "/var/lib/acme/app/key.pem";
    clientCaFile = "/etc/babylon/scrapers-ca.pem";
  };
  prometheus = {
    enable = true;
    tls = {
      caFile = "/etc/babylon/ca.pem";
      certFile = "/etc/prometheus/client.pem";
      keyFile = "/run/secrets/prometheus-client.key";
    };
  };
}
