module github.com/vafs/vafs

go 1.26
