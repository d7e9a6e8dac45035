//! `regcert cluster status` and `regcert cluster resume`.
