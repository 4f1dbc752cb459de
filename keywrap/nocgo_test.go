//go:build !cgo

package keywrap

const cgoBuild = false
