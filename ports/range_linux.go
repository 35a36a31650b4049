package ports

const supported = true
