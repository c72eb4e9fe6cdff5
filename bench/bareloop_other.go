//go:build !linux

package main

import "errors"

func serveBareLoop(addr, upstream string) error {
	return errors.New("bareloop runs on Linux only (epoll)")
}
