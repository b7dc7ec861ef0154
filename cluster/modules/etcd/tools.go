//go:build tools

// Package tools pins etcd's main package so `go mod tidy` keeps its
// dependencies in go.sum.
package tools

import _ "go.etcd.io/etcd/server/v3"
