# meshplane's container image: a static binary on a minimal, non-root base.
#   docker build -t meshplane:0.1.0 .
# Stage 1 builds against musl (Alpine's native libc), so the binary needs
# no libc at run time; the dependency build is cached apart from the source.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev make
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/deps/meshplane* target/release/.fingerprint/meshplane*
COPY src ./src
RUN cargo build --release --locked && strip target/release/meshplane

# Stage 2: nothing but the binary. distroless/static has CA certificates,
# /etc/passwd with the `nonroot` user (65532) and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/meshplane /usr/local/bin/meshplane
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/meshplane"]
CMD ["run", "--log-format=json"]
