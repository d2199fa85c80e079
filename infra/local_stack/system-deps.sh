#!/usr/bin/env bash
# Makes sure the machine has what the local stack runs on: a Java 17+ runtime (Kafka 4, the
# schema registry and the S3 server are JVM programs) and Maven (fetches their pinned jars).
# Installs them with apt-get when missing and we may; otherwise says what to install.
set -euo pipefail

java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  java -version 2>&1 | sed -nE 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/p' | head -n1 |
    awk '{ if ($1 == 1) print $2; else print $1 }'
}

missing=()
[ "$(java_major)" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "the local stack needs: ${missing[*]} (Java 17+ and Maven); install them, or point" >&2
echo "KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL and AWS_ENDPOINT_URL at your own servers" >&2
exit 1
